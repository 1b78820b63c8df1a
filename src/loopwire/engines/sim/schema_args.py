"""Plausible tool-call arguments drawn from a tool's JSON schema with a seeded random generator.

Owns the mapping from a JSON schema to a value that satisfies it; must not encode, stream or pick tools.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 8
"""Deeper (or recursive) schemas get their smallest value instead of further nesting."""

WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lumen", "meadow", "nectar", "onyx", "pepper", "quartz", "river", "saffron", "tundra",
    "umber", "velvet", "willow", "xenon", "yarrow", "zephyr",
)  # fmt: skip


def generate_arguments(schema: Mapping[str, Any] | None, rng: random.Random) -> dict[str, Any]:
    """A JSON object for a function's `parameters` schema; {} for a missing or non-object schema."""
    if not schema:
        return {}
    value = _value(schema, rng, 0)
    return value if isinstance(value, dict) else {}


def _value(schema: Any, rng: random.Random, depth: int) -> Any:
    if not isinstance(schema, Mapping):
        return _word(rng)  # `true` or a malformed schema: anything is acceptable
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options:
            concrete = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return _value(rng.choice(concrete or options), rng, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {}
        for part in all_of:
            if isinstance(part, Mapping):
                merged = _merge(merged, part)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return _value(_merge(merged, rest), rng, depth + 1)

    kind = _kind(schema)
    if kind == "object":
        return _object(schema, rng, depth)
    if kind == "array":
        return _array(schema, rng, depth)
    if kind == "string":
        return _string(schema, rng)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _word(rng)


def _merge(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        if key == "properties" and isinstance(value, Mapping):
            merged["properties"] = {**merged.get("properties", {}), **value}
        elif key == "required" and isinstance(value, list):
            merged["required"] = [*merged.get("required", []), *value]
        else:
            merged[key] = value
    return merged


def _kind(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        concrete = [k for k in kind if k != "null"]
        kind = concrete[0] if concrete else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "any"


def _object(schema: Mapping[str, Any], rng: random.Random, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or depth >= MAX_DEPTH:
        return {}
    required = schema.get("required")
    required_names = set(required) if isinstance(required, list) else set()
    result: dict[str, Any] = {}
    for name, subschema in properties.items():
        if name in required_names or rng.random() < 0.5:
            result[name] = _value(subschema, rng, depth + 1)
    return result


def _array(schema: Mapping[str, Any], rng: random.Random, depth: int) -> list[Any]:
    most = schema.get("maxItems")
    most = most if isinstance(most, int) and not isinstance(most, bool) else None
    if depth >= MAX_DEPTH or (most is not None and most <= 0):
        return []
    low = max(_int_or(schema.get("minItems"), 0), 1)
    high = low + 2 if most is None else min(low + 2, most)
    count = rng.randint(min(low, high), high)
    items = schema.get("items", {})
    values = [_value(items, rng, depth + 1) for _ in range(count)]
    if schema.get("uniqueItems") is True:
        unique: list[Any] = []
        for value in values:
            if value not in unique:
                unique.append(value)
        values = unique
    return values


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    form = schema.get("format")
    if form == "date":
        text = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif form == "date-time":
        text = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    elif form == "email":
        text = f"{_word(rng)}@example.com"
    elif form in ("uri", "url"):
        text = f"https://example.com/{_word(rng)}"
    elif form == "uuid":
        text = "-".join("".join(rng.choices("0123456789abcdef", k=n)) for n in (8, 4, 4, 4, 12))
    else:
        text = " ".join(_word(rng) for _ in range(rng.randint(1, 3)))
    low = _int_or(schema.get("minLength"), 0)
    high = _int_or(schema.get("maxLength"), -1)
    while len(text) < low:
        text += " " + _word(rng)
    if 0 <= high < len(text):
        text = text[:high]
    return text


def _integer(schema: Mapping[str, Any], rng: random.Random) -> int:
    lows = [math.ceil(v) for v in (_num(schema, "minimum"),) if v is not None]
    lows += [math.floor(v) + 1 for v in (_num(schema, "exclusiveMinimum"),) if v is not None]
    highs = [math.floor(v) for v in (_num(schema, "maximum"),) if v is not None]
    highs += [math.ceil(v) - 1 for v in (_num(schema, "exclusiveMaximum"),) if v is not None]
    low = max(lows) if lows else (min(highs) - 100 if highs else 0)
    high = min(highs) if highs else low + 100
    return rng.randint(low, max(low, high))


def _number(schema: Mapping[str, Any], rng: random.Random) -> float:
    bounds = (_num(schema, "exclusiveMinimum"), _num(schema, "exclusiveMaximum"))
    exclusive = [v for v in bounds if v is not None]
    lows = [v for v in (_num(schema, "minimum"), _num(schema, "exclusiveMinimum")) if v is not None]
    highs = [v for v in (_num(schema, "maximum"), _num(schema, "exclusiveMaximum")) if v is not None]
    low = max(lows) if lows else (min(highs) - 100.0 if highs else 0.0)
    high = max(low, min(highs) if highs else low + 100.0)
    for candidate in (round(rng.uniform(low, high), 2), (low + high) / 2):
        if low <= candidate <= high and candidate not in exclusive:
            return candidate
    return (low + high) / 2


def _num(schema: Mapping[str, Any], key: str) -> float | None:
    value = schema.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


def structured_answer(text_format: Mapping[str, Any], rng: random.Random) -> str:
    """The JSON text of an answer in `text.format`: a value of its `json_schema` (`schema`), or a small
    object for `json_object`."""
    schema = text_format.get("schema") if text_format.get("type") == "json_schema" else None
    if isinstance(schema, Mapping):
        return json.dumps(_value(schema, rng, 0), ensure_ascii=False)
    return json.dumps({"answer": _word(rng)}, ensure_ascii=False)
