"""The agent-loop benchmark on a real model (`loopwire bench agent --real`): one `loopwire serve` on the
model (the in-process local engine on SmolLM2's GGUF by default; or `--engine openai-chat` in front of a
real llama.cpp server; or the sim engine, to check the machinery cheaply), one link emulator per profile,
and every transport's rollout of the same task side by side, the transport order rotating between
repeats and profiles.

Owns the real mode's plan, its servers and the order of its rollouts; must not aggregate. The calls are
the scripted policy's, forced through tool_choice (agent/forced.py): the model cannot choose them.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .campaign import Campaign
from .grid import VARIANTS, Cell
from .llama import LlamaServer, real_python
from .measure import RealModel, Target, measure_rollout
from .processes import LinkProcess, ServerProcess, link_emulator
from .progress import Progress
from .samples import write_jsonl

ENGINES = ("local", "openai-chat", "sim")
REAL_VARIANTS = ("http-full", "ws")
"""The default pair: the headline ratio is http-full / ws (add http-chained with --variants)."""
WARMUP_TURNS = 1
LOAD_TIMEOUT_S = 300.0
"""Loading (the first time: converting) the GGUF on a busy 2-core machine."""
ENGINE_IDLE_TIMEOUT_S = 900
"""A forced call streams nothing until it closes: minutes of silence on a busy CPU are not a hang."""


@dataclass(frozen=True, slots=True)
class RealPlan:
    engine: str
    model: Path | None
    """The GGUF (local, openai-chat); None with the sim engine."""
    profiles: tuple[str, ...]
    variants: tuple[str, ...]
    calls: int
    repeats: int
    real: RealModel
    gguf_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        if self.engine != "sim" and self.model is None:
            raise ValueError(f"--engine {self.engine} needs the model's GGUF")
        for name in self.variants:
            if name not in VARIANTS:
                raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
            if VARIANTS[name].batch != 1:
                raise ValueError(f"{name}: forced calls are one per turn")
        if self.calls < 5 or self.repeats < 1:
            raise ValueError("a rollout makes at least 5 tool calls, and repeats must be at least 1")

    @property
    def label(self) -> str:
        """The cell's engine column (Cell.speed in the records): which engine ran the model."""
        return "sim" if self.engine == "sim" else f"smollm2-{self.engine}"

    def runs(self) -> list[tuple[int, str, tuple[str, ...]]]:
        """(repeat, profile, variants in order): the order rotates with the repeat and the profile, so
        each transport runs first (on a model that has just run another rollout) as often as the others."""
        planned = []
        for repeat in range(self.repeats):
            for index, profile in enumerate(self.profiles):
                shift = (repeat + index) % len(self.variants)
                planned.append((repeat, profile, self.variants[shift:] + self.variants[:shift]))
        return planned

    @property
    def rollouts(self) -> int:
        return len(self.runs()) * len(self.variants)


@contextlib.contextmanager
def model_server(plan: RealPlan, workdir: Path) -> Iterator[ServerProcess]:
    """`loopwire serve` on the plan's engine (and, for openai-chat, the llama.cpp server behind it), with
    timing events on; everything stopped on leaving."""
    args = ["--timing-events", "on", "--limit", f"engine_idle_timeout_s={ENGINE_IDLE_TIMEOUT_S}"]
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if plan.engine == "local":
            args += ["--engine", "local", "--model", str(plan.model)]
            if plan.gguf_cache is not None:
                env["LOOPWIRE_GGUF_CACHE"] = str(plan.gguf_cache)
        elif plan.engine == "openai-chat":
            assert plan.model is not None
            llama = LlamaServer(
                real_python(Path.cwd()), plan.model, workdir / "llama.log", n_ctx=8192
            ).start()
            stack.callback(llama.stop)
            args += ["--engine", "openai-chat", "--upstream", llama.base_url]
            args += ["--engine-option", "dialect=llama-cpp-python"]
        server = ServerProcess(
            "memory", workdir / "loopwire.log", args, env=env, ready_timeout_s=LOAD_TIMEOUT_S
        ).start()
        stack.callback(server.stop)
        yield server


async def run_real(plan: RealPlan, jsonl: Path | None = None, progress: Progress | None = None) -> Campaign:
    """Every rollout of the plan against one server; each one's records appended to `jsonl` as it ends.
    A first, unrecorded turn warms the model (its first forward passes are slower)."""
    campaign = Campaign()
    progress = progress if progress is not None else Progress(plan.rollouts)
    with (
        tempfile.TemporaryDirectory(prefix="loopwire-bench-real-") as tmp,
        model_server(plan, Path(tmp)) as server,
        contextlib.ExitStack() as links,
    ):
        direct = Target(server.base_url, server.pid)
        warm = RealModel(plan.real.model, plan.real.call_tokens, plan.real.tool_output_chars, WARMUP_TURNS)
        warmup = Cell("loopback", plan.label, plan.calls)
        await measure_rollout(direct, warmup, VARIANTS["ws"], 0, 0, 0, "warm-up", real=warm)
        emulators: dict[str, LinkProcess] = {}
        for repeat, profile, names in plan.runs():
            target = direct
            if profile != "loopback":
                if profile not in emulators:
                    emulators[profile] = links.enter_context(link_emulator(server.port, profile))
                link = emulators[profile]
                target = Target(f"http://127.0.0.1:{link.port}/v1", server.pid, link)
            cell = Cell(profile, plan.label, plan.calls)
            for order, name in enumerate(names):
                label = f"{profile}/{plan.label}/{plan.calls}calls/r{repeat}/{name}"
                rollout, turns = await measure_rollout(
                    target,
                    cell,
                    VARIANTS[name],
                    repeat,
                    order,
                    repeat,
                    label,
                    real=plan.real,
                    note=f"r{repeat}",
                )
                campaign.rollouts.append(rollout)
                campaign.turns.extend(turns)
                if jsonl is not None:
                    write_jsonl(jsonl, [rollout, *turns])
                progress.step(f"{profile} r{repeat} {name}")
    return campaign
