"""The SDK scenarios (tests/test_sdk_http.py, tests/test_sdk_websocket.py, tests/test_sdk_vocab.py),
unchanged, with the server under test swapped for `--engine responses` in front of a second, real loopwire:
every scenario must pass through the gateway exactly as it does against the sim engine itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

SCENARIOS = ["tests/test_sdk_http.py", "tests/test_sdk_websocket.py", "tests/test_sdk_vocab.py"]


def _pytest(*args: str, engine: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", *args],
        cwd=ROOT,
        env={**os.environ, "LOOPWIRE_TEST_ENGINE": engine},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_sdk_scenarios_pass_through_the_responses_gateway() -> None:
    collected = _pytest("--collect-only", "-q", *SCENARIOS, engine="sim")
    total = len([line for line in collected.stdout.splitlines() if "::" in line])
    assert total > 50, collected.stdout[-2000:]
    run = _pytest("-q", *SCENARIOS, engine="responses")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) == total, summary
    assert not re.search(r"failed|error|skipped", summary), summary
