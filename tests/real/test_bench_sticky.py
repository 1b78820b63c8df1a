"""`loopwire bench sticky` end to end on real llama.cpp replicas, as small as it goes: it runs, every turn
reports the server's counts, and the table comes out (the measurement itself is in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.real


def test_the_stickiness_benchmark_runs_on_real_replicas(
    real_model: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "sticky.json"
    run = subprocess.run(
        [
            sys.executable, "-m", "loopwire", "bench", "sticky", "--replicas", "2", "--conversations", "3",
            "--turns", "2", "--doc-chars", "300", "--max-tokens", "2", "--n-ctx", "1024", "--json", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {row["mode"] for row in rows} == {"sticky", "round-robin"}
    assert len(rows) == 2 * 3 * 2
    for mode in ("sticky", "round-robin"):
        for conversation in {row["conversation"] for row in rows}:
            turns = [row for row in rows if row["mode"] == mode and row["conversation"] == conversation]
            assert [row["turn"] for row in turns] == [1, 2]
            assert turns[1]["input_tokens"] > turns[0]["input_tokens"]  # the history went up
    assert "rr / sticky" in run.stdout
