#!/usr/bin/env python3
"""Reduce Microsoft's Batch OpenAPI spec to the structural extract the tests validate against.

    python tools/extract_batch_spec.py PATH/TO/BatchService-2025-06-01.21.0.json [--output FILE]

Keeps only facts: paths, methods, operationIds, parameters, request/response schemas (types, properties, required,
enums, formats, ranges, $ref, readOnly, additionalProperties, x-ms-enum names and values), response headers, status
codes and the api-version. Every description, title, summary and example is dropped. Keywords are allow-listed per
place (schema, parameter, operation, ...): an upstream keyword this script does not know stops it with one line, so a
newer spec cannot lose a validation keyword silently. Output: sorted keys, one-space indent, trailing newline, so the
same upstream file always gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
EXTRACT_DIR = REPO_ROOT / "tests" / "reference"

# Per place: keywords kept, keywords dropped on purpose (prose, examples, client-generator hints). Anything else is
# an error, so nothing that affects validation is dropped unnoticed.
SCHEMA_KEEP = {
    "$ref", "type", "format", "enum", "required", "readOnly", "default",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
    "minItems", "maxItems", "uniqueItems",
    "properties", "items", "additionalProperties", "allOf", "anyOf", "oneOf", "x-ms-enum",
}
SCHEMA_DROP = {
    "description", "title", "example", "examples", "externalDocs",
    "x-ms-client-name", "x-ms-identifiers", "x-ms-mutability", "x-ms-secret",
}
PARAMETER_KEEP = {
    "$ref", "name", "in", "required", "type", "format", "enum", "default", "collectionFormat",
    "minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "items", "schema", "x-ms-enum",
}
PARAMETER_DROP = {"description", "x-ms-client-name", "x-ms-parameter-location", "x-ms-skip-url-encoding"}
OPERATION_KEEP = {"operationId", "parameters", "responses", "consumes", "produces", "deprecated"}
OPERATION_DROP = {"description", "summary", "tags", "x-ms-examples", "x-ms-pageable", "externalDocs"}
RESPONSE_KEEP = {"schema", "headers"}
RESPONSE_DROP = {"description", "examples"}
HEADER_KEEP = {"type", "format", "enum", "items"}
HEADER_DROP = {"description", "x-ms-client-name"}
ENUM_KEEP = {"name", "modelAsString"}
ENUM_DROP = {"values"}  # rebuilt below without their descriptions
TOP_KEEP = {"swagger", "consumes", "produces", "paths", "definitions", "parameters"}
TOP_DROP = {"info", "schemes", "x-ms-parameterized-host", "security", "securityDefinitions", "tags"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


class UnknownKeyword(ValueError):
    pass


def _pick(node: dict[str, Any], keep: set[str], drop: set[str], where: str) -> dict[str, Any]:
    unknown = sorted(set(node) - keep - drop)
    if unknown:
        raise UnknownKeyword(
            f"{where}: keyword {unknown[0]!r} is unknown to this script; decide whether validation needs it and add "
            "it to the matching *_KEEP or *_DROP set"
        )
    return {key: value for key, value in node.items() if key in keep}


def _enum(node: dict[str, Any], where: str) -> dict[str, Any]:
    result = _pick(node, ENUM_KEEP, ENUM_DROP, where)
    if "values" in node:
        result["values"] = [{k: v for k, v in item.items() if k in ("name", "value")} for item in node["values"]]
    return result


def _schema(node: Any, where: str) -> Any:
    if not isinstance(node, dict):
        return node  # additionalProperties: false/true
    result = _pick(node, SCHEMA_KEEP, SCHEMA_DROP, where)
    if "properties" in result:
        # Keys here are field names (BatchNodeFile has one called "properties"), values are schemas.
        result["properties"] = {name: _schema(sub, f"{where}.{name}") for name, sub in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if key in result:
            result[key] = _schema(node[key], f"{where}.{key}")
    for key in ("allOf", "anyOf", "oneOf"):
        if key in result:
            result[key] = [_schema(sub, f"{where}.{key}[{i}]") for i, sub in enumerate(node[key])]
    if "x-ms-enum" in result:
        result["x-ms-enum"] = _enum(node["x-ms-enum"], f"{where}.x-ms-enum")
    return result


def _parameter(node: dict[str, Any], where: str) -> dict[str, Any]:
    result = _pick(node, PARAMETER_KEEP, PARAMETER_DROP, where)
    for key in ("items", "schema"):
        if key in result:
            result[key] = _schema(node[key], f"{where}.{key}")
    if "x-ms-enum" in result:
        result["x-ms-enum"] = _enum(node["x-ms-enum"], f"{where}.x-ms-enum")
    return result


def _response(node: dict[str, Any], where: str) -> dict[str, Any]:
    result = _pick(node, RESPONSE_KEEP, RESPONSE_DROP, where)
    if "schema" in result:
        result["schema"] = _schema(node["schema"], f"{where}.schema")
    if "headers" in result:
        result["headers"] = {
            name: _pick(header, HEADER_KEEP, HEADER_DROP, f"{where}.headers.{name}")
            for name, header in node["headers"].items()
        }
    return result


def _operation(node: dict[str, Any], where: str) -> dict[str, Any]:
    result = _pick(node, OPERATION_KEEP, OPERATION_DROP, where)
    if "parameters" in result:
        result["parameters"] = [_parameter(p, f"{where}.parameters[{i}]") for i, p in enumerate(node["parameters"])]
    result["responses"] = {status: _response(r, f"{where}.{status}") for status, r in node["responses"].items()}
    return result


def _path_item(node: dict[str, Any], where: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in HTTP_METHODS:
            result[key] = _operation(value, f"{where} {key.upper()}")
        elif key == "parameters":
            result[key] = [_parameter(p, f"{where}.parameters[{i}]") for i, p in enumerate(value)]
        else:
            raise UnknownKeyword(f"{where}: path item keyword {key!r} is unknown to this script")
    return result


def extract(upstream: Path) -> dict[str, Any]:
    raw = upstream.read_bytes()
    spec = json.loads(raw)
    result = _pick(spec, TOP_KEEP, TOP_DROP, "top level")
    result["paths"] = {template: _path_item(item, template) for template, item in spec["paths"].items()}
    result["definitions"] = {name: _schema(d, f"definitions.{name}") for name, d in spec["definitions"].items()}
    result["parameters"] = {
        name: _parameter(p, f"parameters.{name}") for name, p in spec.get("parameters", {}).items()
    }
    version = spec["info"]["version"]
    result["_extract"] = {
        "source": upstream.name,
        "version": version,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "regenerate": f"python tools/extract_batch_spec.py PATH/TO/{upstream.name}",
    }
    return result


def render(extracted: dict[str, Any]) -> str:
    return json.dumps(extracted, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def default_output(version: str) -> Path:
    return EXTRACT_DIR / f"batch-spec-{version}.extract.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", type=Path, help="Microsoft's BatchService-VERSION.json")
    parser.add_argument("--output", type=Path, help="default: tests/reference/batch-spec-VERSION.extract.json")
    args = parser.parse_args(argv)
    try:
        extracted = extract(args.upstream)
    except FileNotFoundError:
        print(f"extract_batch_spec: {args.upstream} does not exist; pass the path of Microsoft's Batch spec file",
              file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"extract_batch_spec: {args.upstream}: no {exc} section; is this a Batch OpenAPI (swagger 2.0) file?",
              file=sys.stderr)
        return 2
    except (json.JSONDecodeError, UnknownKeyword) as exc:
        print(f"extract_batch_spec: {args.upstream}: {exc}", file=sys.stderr)
        return 2
    output = args.output or default_output(extracted["_extract"]["version"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(extracted), encoding="utf-8")
    print(f"wrote {output} ({output.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
