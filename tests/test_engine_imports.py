"""No module under `engines/X/` imports `engines/Y/` (X, Y engine packages), and the shared package imports no
engine: what engines share lives in `engines/common/` (or a module directly under `engines/`).

Reads the source with `ast` (nothing is imported), resolving relative imports, `from pkg import sub` and
plain `import a.b.c`, and names every offending module and import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ENGINES = Path(__file__).resolve().parents[1] / "src" / "loopwire" / "engines"
PACKAGE = "loopwire.engines"
SHARED = frozenset({"common"})
"""Subpackages of engines/ that are not engines: any engine may import them; they import no engine."""


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imported_modules(path: Path, root: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of everything the module imports, including `from X import name`
    as `X.name` (the name may be a submodule)."""
    name = module_name(path, root, package)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def subpackage_of(dotted: str, root: Path, package: str) -> str | None:
    """The engines/ subpackage a dotted name lies in, or None (outside engines/, or a module at its top)."""
    prefix = package + "."
    if not dotted.startswith(prefix):
        return None
    first = dotted[len(prefix) :].split(".")[0]
    return first if (root / first / "__init__.py").is_file() else None


def cross_engine_imports(root: Path, package: str) -> list[str]:
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        owner = subpackage_of(module_name(path, root, package), root, package)
        if owner is None:
            continue  # base.py, factory.py: not inside an engine package
        for line, target in imported_modules(path, root, package):
            other = subpackage_of(target, root, package)
            if other is None or other == owner or (other in SHARED and owner not in SHARED):
                continue
            problems.append(f"{path.relative_to(root.parent)}:{line} ({owner}) imports {target} ({other})")
    return sorted(set(problems))


def test_no_engine_imports_another_engine() -> None:
    assert (ENGINES / "common" / "__init__.py").is_file()
    problems = cross_engine_imports(ENGINES, PACKAGE)
    assert not problems, "engines importing other engines:\n" + "\n".join(problems)


def test_the_walk_finds_every_form_of_a_cross_engine_import(tmp_path: Path) -> None:
    root = tmp_path / "engines"
    for sub in ("alpha", "beta", "common"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "base.py").write_text("from .alpha import x\n")  # a top-level module may import any engine
    (root / "alpha" / "ok.py").write_text(
        "from ..base import Engine\nfrom ..common import text\nfrom . import ok\nfrom .ok import y\n"
        "import loopwire.engines.common.text\nfrom ...protocol import items\n"
    )
    (root / "alpha" / "relative.py").write_text("from ..beta.thing import f\n")
    (root / "alpha" / "parent.py").write_text("from .. import beta\n")
    (root / "beta" / "absolute.py").write_text("import loopwire.engines.alpha.ok\n")
    (root / "beta" / "__init__.py").write_text("from loopwire.engines.alpha import ok\n")
    (root / "common" / "shared.py").write_text("from ..beta import b\n")
    problems = cross_engine_imports(root, "loopwire.engines")
    assert problems == [
        "engines/alpha/parent.py:1 (alpha) imports loopwire.engines.beta (beta)",
        "engines/alpha/relative.py:1 (alpha) imports loopwire.engines.beta.thing (beta)",
        "engines/alpha/relative.py:1 (alpha) imports loopwire.engines.beta.thing.f (beta)",
        "engines/beta/__init__.py:1 (beta) imports loopwire.engines.alpha (alpha)",
        "engines/beta/__init__.py:1 (beta) imports loopwire.engines.alpha.ok (alpha)",
        "engines/beta/absolute.py:1 (beta) imports loopwire.engines.alpha.ok (alpha)",
        "engines/common/shared.py:1 (common) imports loopwire.engines.beta (beta)",
        "engines/common/shared.py:1 (common) imports loopwire.engines.beta.b (beta)",
    ]
