"""Plausible tool-call arguments drawn from a tool's JSON schema with a seeded random generator.

Owns the mapping from a JSON schema to a value that satisfies it, within bounds on the work a schema may ask
for (a small schema can demand a huge value: `minItems`, `minLength`, arrays of arrays); past a bound the
value is cut short, as a model's output would be. Must not encode, stream or pick tools.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 8
"""Deeper (or recursive) schemas get their smallest value instead of further nesting."""
MAX_ARRAY_ITEMS = 64
"""Most items in one generated array, whatever `minItems` asks."""
MAX_STRING_CHARS = 4096
"""Longest generated string, whatever `minLength` asks."""
MAX_VALUES = 2048
"""Most values (objects, arrays, scalars) in one call's arguments; once spent, arrays and objects stop
growing, so the work is bounded however the schema multiplies (e.g. arrays of arrays of objects)."""
MAX_TEXT_CHARS = 64 * 1024
"""Most characters of `minLength` padding in one call's arguments, over all its strings."""

WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lumen", "meadow", "nectar", "onyx", "pepper", "quartz", "river", "saffron", "tundra",
    "umber", "velvet", "willow", "xenon", "yarrow", "zephyr",
)  # fmt: skip


class _Budget:
    """The values and padding characters one call may still generate."""

    __slots__ = ("chars", "left")

    def __init__(self) -> None:
        self.left = MAX_VALUES
        self.chars = MAX_TEXT_CHARS


def generate_arguments(schema: Mapping[str, Any] | None, rng: random.Random) -> dict[str, Any]:
    """A JSON object for a function's `parameters` schema; {} for a missing or non-object schema."""
    if not schema:
        return {}
    value = _value(schema, rng, 0, _Budget())
    return value if isinstance(value, dict) else {}


def _value(schema: Any, rng: random.Random, depth: int, budget: _Budget) -> Any:
    budget.left -= 1
    if not isinstance(schema, Mapping):
        return _word(rng)  # `true` or a malformed schema: anything is acceptable
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options and depth < MAX_DEPTH:
            concrete = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return _value(rng.choice(concrete or options), rng, depth + 1, budget)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of and depth < MAX_DEPTH:
        merged: dict[str, Any] = {}
        for part in all_of:
            if isinstance(part, Mapping):
                merged = _merge(merged, part)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return _value(_merge(merged, rest), rng, depth + 1, budget)

    kind = _kind(schema)
    if kind == "object":
        return _object(schema, rng, depth, budget)
    if kind == "array":
        return _array(schema, rng, depth, budget)
    if kind == "string":
        return _string(schema, rng, budget)
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


def _object(schema: Mapping[str, Any], rng: random.Random, depth: int, budget: _Budget) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or depth >= MAX_DEPTH:
        return {}
    required = schema.get("required")
    required_names = set(required) if isinstance(required, list) else set()
    result: dict[str, Any] = {}
    for name, subschema in properties.items():
        if budget.left <= 0:
            break
        if name in required_names or rng.random() < 0.5:
            result[name] = _value(subschema, rng, depth + 1, budget)
    return result


def _array(schema: Mapping[str, Any], rng: random.Random, depth: int, budget: _Budget) -> list[Any]:
    most = schema.get("maxItems")
    most = most if isinstance(most, int) and not isinstance(most, bool) else None
    if depth >= MAX_DEPTH or (most is not None and most <= 0):
        return []
    low = min(max(_int_or(schema.get("minItems"), 0), 1), MAX_ARRAY_ITEMS)
    high = low + 2 if most is None else min(low + 2, most)
    count = min(rng.randint(min(low, high), high), MAX_ARRAY_ITEMS)
    items = schema.get("items", {})
    values = []
    for _ in range(count):
        if budget.left <= 0:
            break
        values.append(_value(items, rng, depth + 1, budget))
    if schema.get("uniqueItems") is True:
        unique: list[Any] = []
        for value in values:
            if value not in unique:
                unique.append(value)
        values = unique
    return values


def _string(schema: Mapping[str, Any], rng: random.Random, budget: _Budget) -> str:
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
    low = min(_int_or(schema.get("minLength"), 0), MAX_STRING_CHARS, len(text) + max(budget.chars, 0))
    high = _int_or(schema.get("maxLength"), -1)
    if len(text) < low:
        budget.chars -= low - len(text)
        words = [text]
        length = len(text)
        while length < low:
            word = _word(rng)
            words.append(word)
            length += 1 + len(word)
        text = " ".join(words)[:MAX_STRING_CHARS]
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
    """A numeric bound; None when absent, not a number, or beyond a float (an integer of 400 digits)."""
    value = schema.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


def structured_answer(text_format: Mapping[str, Any], rng: random.Random) -> str:
    """The JSON text of an answer in `text.format`: a value of its `json_schema` (`schema`), or a small
    object for `json_object`."""
    schema = text_format.get("schema") if text_format.get("type") == "json_schema" else None
    if isinstance(schema, Mapping):
        return json.dumps(_value(schema, rng, 0, _Budget()), ensure_ascii=False)
    return json.dumps({"answer": _word(rng)}, ensure_ascii=False)
