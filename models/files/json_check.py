"""Check a JSON value against a JSON Schema document the pack ships (models/data/*.schema.json), so one file says
what a valid report is - for the pack, which refuses a malformed one naming the place, and for anyone who reads the
reports with their own tools. The part of JSON Schema (2020-12) those files use: type, const, enum, required,
properties, additionalProperties, items, minItems, minimum, minLength, pattern, $ref into $defs, allOf, if/then."""

from __future__ import annotations

import json
import re
from functools import cache

from ..errors import GenAffectInputError
from .packaged_data import data_path

TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
KNOWN = {"$schema", "$id", "$defs", "title", "description", "$comment", "type", "const", "enum", "required",
         "properties", "additionalProperties", "items", "minItems", "minimum", "minLength", "pattern", "$ref", "allOf",
         "if", "then"}


@cache
def load_schema(name: str) -> dict:
    """A schema file of models/data; one that uses a keyword this checker does not know is refused, so a schema
    edited beyond it cannot pass values it was meant to stop."""
    with open(data_path(name), encoding="utf-8") as handle:
        schema = json.load(handle)
    unknown = _keywords(schema) - KNOWN
    if unknown:
        raise ValueError(f"{name} uses {sorted(unknown)}, which models/files/json_check.py does not check.")
    return schema


def _keywords(schema) -> set:
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            found |= set().union(*(_keywords(v) for v in value.values())) if value else set()
        elif key in ("items", "additionalProperties", "if", "then"):
            found |= _keywords(value)
        elif key == "allOf":
            found |= set().union(*(_keywords(v) for v in value))
    return found


def _is(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[kind])


def errors(value, schema: dict, root: dict | None = None, where: str = "") -> list[str]:
    """Every place where ``value`` breaks ``schema``, as "where: what" (empty: it is valid)."""
    root = schema if root is None else root
    place = where or "the top level"
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return errors(value, root["$defs"][name], root, where)
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, kind) for kind in kinds):
            return [f"{place} is {_describe(value)}; expected {' or '.join(kinds)}"]
    found = []
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        found.append(f"{place} is {json.dumps(value)}; expected {json.dumps(schema['const'])}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{place} is {json.dumps(value)}; expected one of {json.dumps(schema['enum'])}")
    if "minimum" in schema and _is(value, "number") and value < schema["minimum"]:
        found.append(f"{place} is {value}; the least allowed is {schema['minimum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            found.append(f"{place} is empty" if not value else f"{place} is shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{place} is {json.dumps(value)}, which does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append(f"{place} has {len(value)} entries; at least {schema['minItems']} expected")
        if "items" in schema:
            for index, item in enumerate(value):
                found += errors(item, schema["items"], root, f"{where}[{index}]")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{place} has no {key!r}")
        properties = schema.get("properties", {})
        for key, item in value.items():
            inner = f"{where}.{key}" if where else key
            if key in properties:
                found += errors(item, properties[key], root, inner)
            elif schema.get("additionalProperties", True) is False:
                found.append(f"{inner} is not a known field")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += errors(item, schema["additionalProperties"], root, inner)
    for part in schema.get("allOf", []):
        found += errors(value, part, root, where)
    if "if" in schema and not errors(value, schema["if"], root, where):
        found += errors(value, schema.get("then", {}), root, where)
    return found


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {json.dumps(value[:40])}"
    return "a list" if isinstance(value, list) else "an object"


def check(value, schema_name: str, what: str) -> None:
    """Refuse ``value`` when it breaks the schema ``schema_name``, naming ``what`` and the first few places."""
    found = errors(value, load_schema(schema_name))
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise GenAffectInputError(f"{what} is not a valid {schema_name.removesuffix('.schema.json')} "
                                  f"({schema_name}): {'; '.join(found[:5])}{more}.")
