"""The fixture: writes a small real Python repository with one bug that a failing test exposes.

Owns the repository's files and the fix description (for the sim policy only); must not run anything.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

SIDECAR = ".loopwire-fixture.json"
"""Where `write_fixture` records the fix description, inside the repository (hidden from the tools)."""


@dataclass(frozen=True, slots=True)
class FixSpec:
    """How to repair the bug: in `path`, replace the line `old` (occurs exactly once) with `new`.

    Only the simulated model's policy may use it: it stands in for what a real model would work out."""

    path: str
    old: str
    new: str
    test: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FixSpec:
        data = json.loads(text)
        return cls(str(data["path"]), str(data["old"]), str(data["new"]), str(data["test"]))


@dataclass(frozen=True, slots=True)
class Fixture:
    package: str
    files: dict[str, str]
    fix: FixSpec


_PACKAGES = ("textkit", "linetools", "parsekit", "strutil")

_INIT = '''"""__PKG__: small text utilities (ranges, statistics, slugs, wrapping and config files)."""

from .config import load_config, parse_config
from .ranges import format_ranges, parse_ranges
from .stats import mean, median, percentile
from .text import slugify, wrap_text

__all__ = [
    "format_ranges",
    "load_config",
    "mean",
    "median",
    "parse_config",
    "parse_ranges",
    "percentile",
    "slugify",
    "wrap_text",
]

__version__ = "0.__SEED__.0"
'''

_RANGES = '''"""Page-range specifications such as "1-3,7,10-12", as used by printers and log viewers."""

from __future__ import annotations


class RangeError(ValueError):
    """A range specification that cannot be parsed."""


def _parse_bound(text: str, spec: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise RangeError(f"not a number: {text!r} in {spec!r}")
    return int(text)


def parse_ranges(spec: str) -> list[int]:
    """Expand a specification into the sorted list of distinct numbers it names.

    >>> parse_ranges("1-3,7")
    [1, 2, 3, 7]
    """
    values: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, _, high = part.partition("-")
            start, end = _parse_bound(low, spec), _parse_bound(high, spec)
            if end < start:
                raise RangeError(f"descending range {part!r} in {spec!r}")
            values.extend(range(start, end + 1))
        else:
            values.append(_parse_bound(part, spec))
    return sorted(set(values))


def format_ranges(values: list[int]) -> str:
    """The shortest specification naming exactly `values` (the inverse of parse_ranges)."""
    ordered = sorted(set(values))
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        start = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == ordered[index] + 1:
            index += 1
        end = ordered[index]
        parts.append(str(start) if start == end else f"{start}-{end}")
        index += 1
    return ",".join(parts)
'''

_STATS = '''"""Descriptive statistics over lists of numbers, without numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; raises ValueError on an empty sequence."""
    if not values:
        raise ValueError("mean of an empty sequence")
    return math.fsum(values) / len(values)


def median(values: Sequence[float]) -> float:
    """The middle value, or the mean of the two middle values for an even count."""
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile, `fraction` in [0, 1] (0.5 is the median)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    weight = position - lower
    return ordered[lower] * (1.0 - weight) + ordered[upper] * weight


def spread(values: Sequence[float]) -> float:
    """Population standard deviation."""
    centre = mean(values)
    return math.sqrt(math.fsum((value - centre) ** 2 for value in values) / len(values))
'''

_TEXT = '''"""Text helpers: URL slugs and greedy line wrapping."""

from __future__ import annotations

import re
import unicodedata

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def slugify(title: str, max_length: int = 40) -> str:
    """A lowercase ASCII slug of `title`, words joined by "-", at most `max_length` characters."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = [word for word in _NOT_WORD.split(ascii_title.lower()) if word]
    slug = "-".join(words)[:max_length]
    return slug.rstrip("-")


def wrap_text(text: str, width: int) -> list[str]:
    """Greedy wrapping: as many words per line as fit in `width` characters (long words stay whole)."""
    if width < 1:
        raise ValueError("width must be positive")
    lines: list[str] = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current = current + " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines
'''

_CONFIG = '''"""A tiny "key = value" configuration format with comments and typed values."""

from __future__ import annotations

from pathlib import Path

Value = str | int | float | bool


class ConfigError(ValueError):
    """A line that is neither blank, a comment, nor "key = value"."""


def _convert(raw: str) -> Value:
    lowered = raw.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def parse_config(text: str) -> dict[str, Value]:
    """Parse the text of a configuration file; later keys override earlier ones."""
    settings: dict[str, Value] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"line {number}: expected 'key = value', got {line!r}")
        settings[key.strip()] = _convert(raw.strip())
    return settings


def load_config(path: str | Path) -> dict[str, Value]:
    """Read and parse a configuration file."""
    return parse_config(Path(path).read_text(encoding="utf-8"))
'''

_TEST_RANGES = """import unittest

from __PKG__.ranges import RangeError, format_ranges, parse_ranges


class ParseRangesTest(unittest.TestCase):
    def test_single_numbers(self) -> None:
        self.assertEqual(parse_ranges("3,1,2"), [1, 2, 3])

    def test_inclusive_range(self) -> None:
        self.assertEqual(parse_ranges("1-3,7"), [1, 2, 3, 7])

    def test_overlap_and_blanks(self) -> None:
        self.assertEqual(parse_ranges(" 2-4, ,3-5 "), [2, 3, 4, 5])

    def test_errors(self) -> None:
        with self.assertRaises(RangeError):
            parse_ranges("5-2")
        with self.assertRaises(RangeError):
            parse_ranges("a-b")


class FormatRangesTest(unittest.TestCase):
    def test_round_trip(self) -> None:
        for spec in ("1-3,7", "10", "1,3,5-9"):
            self.assertEqual(format_ranges(parse_ranges(spec)), spec)


if __name__ == "__main__":
    unittest.main()
"""

_TEST_STATS = """import unittest

from __PKG__.stats import mean, median, percentile, spread


class StatsTest(unittest.TestCase):
    def test_mean(self) -> None:
        self.assertAlmostEqual(mean([1, 2, 3, 4]), 2.5)

    def test_median_odd(self) -> None:
        self.assertEqual(median([5, 1, 3]), 3.0)

    def test_median_even(self) -> None:
        self.assertEqual(median([4, 1, 3, 2]), 2.5)

    def test_percentile(self) -> None:
        self.assertAlmostEqual(percentile([1, 2, 3, 4, 5], 0.25), 2.0)
        self.assertAlmostEqual(percentile([10, 20], 0.5), 15.0)

    def test_spread(self) -> None:
        self.assertAlmostEqual(spread([2, 4, 4, 4, 5, 5, 7, 9]), 2.0)

    def test_empty(self) -> None:
        with self.assertRaises(ValueError):
            median([])


if __name__ == "__main__":
    unittest.main()
"""

_TEST_TEXT = """import unittest

from __PKG__.text import slugify, wrap_text


class SlugifyTest(unittest.TestCase):
    def test_basic(self) -> None:
        self.assertEqual(slugify("Hello, World!"), "hello-world")

    def test_accents(self) -> None:
        self.assertEqual(slugify("Crème Brûlée"), "creme-brulee")

    def test_max_length(self) -> None:
        self.assertEqual(slugify("abcdefghij", max_length=10), "abcdefghij")
        self.assertEqual(slugify("one two three", max_length=7), "one-two")


class WrapTextTest(unittest.TestCase):
    def test_exact_fit(self) -> None:
        self.assertEqual(wrap_text("aaa bbb ccc", 7), ["aaa bbb", "ccc"])

    def test_long_word(self) -> None:
        self.assertEqual(wrap_text("a verylongword b", 4), ["a", "verylongword", "b"])


if __name__ == "__main__":
    unittest.main()
"""

_TEST_CONFIG = """import unittest

from __PKG__.config import ConfigError, parse_config


class ConfigTest(unittest.TestCase):
    def test_values(self) -> None:
        text = "# settings\\nname = demo\\nworkers = 4\\nratio = 0.5\\ndebug = yes\\n"
        self.assertEqual(parse_config(text), {"name": "demo", "workers": 4, "ratio": 0.5, "debug": True})

    def test_override(self) -> None:
        self.assertEqual(parse_config("a = 1\\na = 2"), {"a": 2})

    def test_error(self) -> None:
        with self.assertRaises(ConfigError):
            parse_config("just words")


if __name__ == "__main__":
    unittest.main()
"""

_README = """# __PKG__

Small text utilities: page ranges (`parse_ranges`), statistics (`median`, `percentile`), slugs and line
wrapping, and a tiny `key = value` configuration format.

Run the tests with `python -m unittest discover -s tests -t .` (or `python -m pytest`).
"""

_PYPROJECT = """[project]
name = "__PKG__"
version = "0.__SEED__.0"
requires-python = ">=3.10"

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

# (module, correct line, buggy line, test module that fails with the bug)
_BUGS: tuple[tuple[str, str, str, str], ...] = (
    (
        "ranges.py",
        "            values.extend(range(start, end + 1))",
        "            values.extend(range(start, end))",
        "tests.test_ranges",
    ),
    (
        "stats.py",
        "    return (ordered[middle - 1] + ordered[middle]) / 2",
        "    return (ordered[middle] + ordered[middle + 1]) / 2",
        "tests.test_stats",
    ),
    (
        "text.py",
        '    slug = "-".join(words)[:max_length]',
        '    slug = "-".join(words)[: max_length - 1]',
        "tests.test_text",
    ),
    (
        "text.py",
        "        elif len(current) + 1 + len(word) <= width:",
        "        elif len(current) + 1 + len(word) < width:",
        "tests.test_text",
    ),
)
BUG_COUNT = len(_BUGS)


_PADDING_WORDS = (
    "range", "bound", "parse", "token", "width", "config", "value", "section", "median", "sample",
    "slug", "wrap", "line", "field", "error", "limit", "default", "strict", "offset", "window",
)  # fmt: skip


def _padding(path: str, size: int) -> str:
    """About `size` bytes of design notes as comments, the same for the same module every time: history
    that a read of the module brings back, with nothing a test or the fix depends on."""
    rng = random.Random(f"loopwire-padding:{path}")
    lines = ["", "", "# Design notes (kept with the code they describe)."]
    total = 0
    while total < size:
        words = " ".join(rng.choice(_PADDING_WORDS) for _ in range(rng.randint(8, 14)))
        line = f"# note {len(lines) - 2}: {words}."
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def build_fixture(seed: int, bug: int | None = None, padding_bytes: int = 0) -> Fixture:
    """The repository for `seed` (same seed, same bytes). `bug` picks the bug by index, else the seed does.
    `padding_bytes` appends that much commentary to each module of the package, so every read of one
    grows the conversation by as much (a benchmark's knob for history size)."""
    if padding_bytes < 0:
        raise ValueError("padding_bytes must not be negative")
    rng = random.Random(f"loopwire-fixture:{seed}")
    package = rng.choice(_PACKAGES)
    index = rng.randrange(BUG_COUNT) if bug is None else bug % BUG_COUNT
    module, correct, buggy, test = _BUGS[index]
    sources = {
        f"{package}/__init__.py": _INIT,
        f"{package}/ranges.py": _RANGES,
        f"{package}/stats.py": _STATS,
        f"{package}/text.py": _TEXT,
        f"{package}/config.py": _CONFIG,
        "tests/__init__.py": "",
        "tests/test_ranges.py": _TEST_RANGES,
        "tests/test_stats.py": _TEST_STATS,
        "tests/test_text.py": _TEST_TEXT,
        "tests/test_config.py": _TEST_CONFIG,
        "README.md": _README,
        "pyproject.toml": _PYPROJECT,
    }
    files = {
        path: text.replace("__PKG__", package).replace("__SEED__", str(seed))
        for path, text in sources.items()
    }
    if padding_bytes:
        for path in files:
            if path.startswith(f"{package}/") and path != f"{package}/__init__.py":
                files[path] += _padding(path, padding_bytes)
    target = f"{package}/{module}"
    if files[target].count(correct) != 1:
        raise AssertionError(f"fixture bug line is not unique in {target}")
    files[target] = files[target].replace(correct, buggy)
    return Fixture(package, files, FixSpec(target, buggy, correct, test))


def write_fixture(directory: Path, seed: int, bug: int | None = None, padding_bytes: int = 0) -> Fixture:
    """Write the repository into `directory` (created; existing fixture files are overwritten) and record
    the fix description in its sidecar file."""
    fixture = build_fixture(seed, bug, padding_bytes)
    directory.mkdir(parents=True, exist_ok=True)
    for relative, text in fixture.files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (directory / SIDECAR).write_text(fixture.fix.to_json() + "\n", encoding="utf-8")
    return fixture


def read_fix(directory: Path) -> FixSpec:
    """The fix description a previous `write_fixture` recorded in `directory`."""
    return FixSpec.from_json((directory / SIDECAR).read_text(encoding="utf-8"))
