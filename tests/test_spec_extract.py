"""The in-repository spec extract: facts only (no prose), a header naming its source, and reproducible from the
upstream file by tools/extract_batch_spec.py."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.spec_validation import API_VERSION, SPEC_EXTRACT, UPSTREAM_FILENAME, load_spec

pytestmark = pytest.mark.quick

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "tools" / "extract_batch_spec.py"
UPSTREAM_ENV = "AZBATCH_UPSTREAM_SPEC"
PROSE_KEYS = {"description", "summary", "title", "example", "examples", "x-ms-examples", "externalDocs"}


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("extract_batch_spec", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(node: Any, where: str = "$", field_names: bool = False) -> Iterator[str]:
    """Paths of prose keywords; the keys of a `properties` map are field names, not keywords (BatchNodeFile has a
    field called "properties", whose schema's own description must still be caught)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in PROSE_KEYS and not field_names:
                yield f"{where}.{key}"
            yield from _prose(value, f"{where}.{key}", key == "properties" and not field_names)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _prose(value, f"{where}[{index}]")


def test_extract_has_no_prose() -> None:
    extract = load_spec()
    assert list(_prose(extract)) == []
    # The walk does look inside: the x-ms-enum values kept their names and lost their descriptions.
    state = extract["definitions"]["BatchTaskState"]
    assert state["x-ms-enum"]["values"][0] == {"name": "Active", "value": "active"}
    assert set(extract) == {"_extract", "swagger", "consumes", "produces", "paths", "definitions", "parameters"}


def test_extract_header_names_its_source() -> None:
    header = load_spec()["_extract"]
    assert header["source"] == UPSTREAM_FILENAME
    assert header["version"] == API_VERSION
    assert re.fullmatch(r"[0-9a-f]{64}", header["sha256"])
    assert header["regenerate"] == f"python tools/extract_batch_spec.py PATH/TO/{UPSTREAM_FILENAME}"
    assert SPEC_EXTRACT == _script().default_output(API_VERSION)
    assert SPEC_EXTRACT.stat().st_size < 400_000


def _tiny_upstream() -> dict[str, Any]:
    """A small swagger document shaped like Microsoft's, with prose everywhere it can appear."""
    return {
        "swagger": "2.0",
        "info": {"title": "T", "version": "2099-01-01.1", "description": "prose"},
        "tags": [{"name": "Things", "description": "prose"}],
        "paths": {
            "/things/{id}": {
                "get": {
                    "operationId": "Things_Get",
                    "summary": "prose",
                    "description": "prose",
                    "tags": ["Things"],
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "type": "string", "description": "prose",
                         "x-ms-client-name": "thingId"},
                        {"$ref": "#/parameters/Version"},
                    ],
                    "responses": {
                        "200": {"description": "prose", "schema": {"$ref": "#/definitions/Thing"},
                                "headers": {"ETag": {"type": "string", "description": "prose"}}},
                        "default": {"description": "prose", "schema": {"type": "object"}},
                    },
                    "x-ms-examples": {"Get a thing": {"$ref": "./examples/Things_Get.json"}},
                }
            }
        },
        "definitions": {
            "Thing": {
                "type": "object",
                "description": "prose",
                "properties": {
                    "description": {"type": "string", "description": "a field called description"},
                    "state": {"$ref": "#/definitions/State", "readOnly": True, "description": "prose"},
                    "size": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 9},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["state"],
            },
            "State": {
                "type": "string",
                "enum": ["on", "off"],
                "x-ms-enum": {"name": "State", "modelAsString": True,
                              "values": [{"name": "On", "value": "on", "description": "prose"},
                                         {"name": "Off", "value": "off", "description": "prose"}]},
            },
        },
        "parameters": {
            "Version": {"name": "api-version", "in": "query", "required": True, "type": "string", "minLength": 1,
                        "description": "prose", "x-ms-parameter-location": "method"},
        },
    }


def test_script_keeps_structure_and_drops_prose(tmp_path: Path) -> None:
    upstream = tmp_path / "BatchService-2099-01-01.1.json"
    upstream.write_text(json.dumps(_tiny_upstream()))
    out = tmp_path / "extract.json"
    assert _script().main([str(upstream), "--output", str(out)]) == 0
    text = out.read_text()
    extract = json.loads(text)
    assert "prose" not in text and list(_prose(extract)) == []
    thing = extract["definitions"]["Thing"]
    assert thing["properties"]["description"] == {"type": "string"}
    assert thing["properties"]["state"] == {"$ref": "#/definitions/State", "readOnly": True}
    assert thing["properties"]["size"] == {"type": "integer", "format": "int32", "minimum": 1, "maximum": 9}
    assert thing["required"] == ["state"]
    assert extract["definitions"]["State"]["x-ms-enum"]["values"][1] == {"name": "Off", "value": "off"}
    operation = extract["paths"]["/things/{id}"]["get"]
    assert operation["parameters"][0] == {"name": "id", "in": "path", "required": True, "type": "string"}
    assert operation["responses"]["200"] == {
        "schema": {"$ref": "#/definitions/Thing"}, "headers": {"ETag": {"type": "string"}}
    }
    assert extract["parameters"]["Version"]["minLength"] == 1
    assert extract["_extract"] == {
        "source": upstream.name,
        "version": "2099-01-01.1",
        "sha256": hashlib.sha256(upstream.read_bytes()).hexdigest(),
        "regenerate": f"python tools/extract_batch_spec.py PATH/TO/{upstream.name}",
    }
    # Deterministic: the same upstream with its keys in another order gives the same bytes.
    reordered = json.loads(upstream.read_text(), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    upstream.write_text(json.dumps(reordered))
    again = _script().extract(upstream)
    again["_extract"]["sha256"] = extract["_extract"]["sha256"]
    assert _script().render(again) == text


def test_script_refuses_an_unknown_keyword(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = _tiny_upstream()
    document["definitions"]["Thing"]["properties"]["size"]["multipleOf"] = 2
    upstream = tmp_path / "upstream.json"
    upstream.write_text(json.dumps(document))
    assert _script().main([str(upstream), "--output", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "definitions.Thing.size: keyword 'multipleOf' is unknown" in err
    assert not (tmp_path / "out.json").exists()
    assert _script().main([str(tmp_path / "absent.json")]) == 2
    assert "absent.json does not exist" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get(UPSTREAM_ENV), reason=f"{UPSTREAM_ENV} unset: no upstream spec to compare")
def test_upstream_regenerates_the_extract(tmp_path: Path) -> None:
    out = tmp_path / "extract.json"
    assert _script().main([os.environ[UPSTREAM_ENV], "--output", str(out)]) == 0
    assert out.read_bytes() == SPEC_EXTRACT.read_bytes()
