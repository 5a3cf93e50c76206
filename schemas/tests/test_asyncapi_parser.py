"""`schemas/asyncapi.json` through the official AsyncAPI parser, as a new user's tools read it.

The parser is `@asyncapi/parser` from npm, pinned by `infra/asyncapi/package-lock.json` and run
under Node by `infra/asyncapi/parse.mjs`. `make asyncapi-parser` (a step of `make test`)
installs it; run alone, the test installs it itself with `npm ci`. Without Node or npm the test
fails instead of skipping: a green run that never parsed the document would prove nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adaptmesh_schemas import generate

pytestmark = pytest.mark.node

PARSER_DIR = Path(__file__).resolve().parents[2] / "infra" / "asyncapi"
PARSE_SCRIPT = PARSER_DIR / "parse.mjs"
INSTALLED = PARSER_DIR / "node_modules" / "@asyncapi" / "parser" / "package.json"


def _pinned_version() -> str:
    manifest = json.loads((PARSER_DIR / "package.json").read_text(encoding="utf-8"))
    return str(manifest["dependencies"]["@asyncapi/parser"])


def _installed_version() -> str | None:
    if not INSTALLED.is_file():
        return None
    return str(json.loads(INSTALLED.read_text(encoding="utf-8"))["version"])


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH; Node.js with npm is needed to run the AsyncAPI parser")
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """Path of `node`, with the pinned parser installed under `infra/asyncapi/node_modules`."""
    node = _tool("node")
    if _installed_version() != _pinned_version():
        command = [_tool("npm"), "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
        result = subprocess.run(
            command, cwd=PARSER_DIR, capture_output=True, text=True, check=False, timeout=300
        )
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} in {PARSER_DIR} failed:\n{result.stderr[-2000:]}")
    assert _installed_version() == _pinned_version()
    return node


def parse(node: str, document: Path) -> dict[str, Any]:
    """The parser's verdict on `document`: {"parser", "parsed", "diagnostics": [...]}."""
    result = subprocess.run(
        [node, str(PARSE_SCRIPT), str(document)],
        cwd=PARSER_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"the parser did not run:\n{result.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _errors(report: dict[str, Any]) -> list[str]:
    return [
        f"{d['code']} at {d['path']}: {d['message']}"
        for d in report["diagnostics"]
        if d["severity"] == "error"
    ]


@pytest.mark.timeout(360)
def test_the_committed_asyncapi_document_parses_with_no_errors(node: str) -> None:
    report = parse(node, generate.SCHEMAS_DIR / generate.ASYNCAPI_FILE)
    assert report["parser"] == _pinned_version()
    assert _errors(report) == []
    assert report["parsed"] is True


@pytest.mark.timeout(360)
def test_the_parser_refuses_an_openapi_discriminator_object(node: str, tmp_path: Path) -> None:
    """The check is not vacuous: the `discriminator` object pydantic writes by default, put
    back where it used to be, makes the same parser fail the document."""
    document = generate.asyncapi_document()
    operations = document["components"]["schemas"]["TaxonomyChanged"]["properties"]["operations"]
    assert "discriminator" not in operations["items"]
    operations["items"]["discriminator"] = {
        "propertyName": "op",
        "mapping": {"add": "#/components/schemas/LabelAdded"},
    }
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    report = parse(node, path)
    assert report["parsed"] is False
    assert any("discriminator" in error for error in _errors(report)), _errors(report)
