"""`loopwire bench COMMAND`: the benchmarks, one command each; plain `loopwire bench [--quick|--full ...]`
is `loopwire bench agent`.

Owns choosing the command and importing it only when it runs (the local engine's needs torch); must not
measure anything itself.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("agent_cli", "the toy coding agent over each transport and link profile (the default)"),
    "turns": ("turns", "per-turn latency and server CPU of a growing conversation: ws, HTTP, a bare echo"),
    "stages": ("stages", "where one WebSocket-mode turn spends its server time: run_turn in process"),
    "gateway": ("gateway", "the openai-chat and responses engines' overhead over zero-latency upstreams"),
    "local": ("local_kv", "the local engine's TTFT with the lane's KV cache reused vs a full prefill"),
    "local-turn": (
        "local_turn",
        "a forced-call turn on the local engine at 1k-7k context: KV cache, attention, jump-forward",
    ),
    "render": (
        "render_cache",
        "the local engine's per-turn prompt render with the lane's token cache vs none",
    ),
    "grammar": (
        "constrained",
        "xgrammar, llguidance, outlines-core: tool-call grammar compile and mask cost",
    ),
    "sticky": (
        "sticky",
        "interleaved conversations over real llama.cpp replicas: sticky vs round-robin TTFT",
    ),
    "token-ids": (
        "token_ids",
        "a real llama-server fed token ids (local engine) vs chat messages (openai-chat): TTFT",
    ),
    "soak": ("soak", "hundreds of concurrent WebSocket tool loops plus HTTP: nothing lost, RSS flat"),
    "store": ("store_put", "how long a durable write takes as the turn sees it, per store and write mode"),
    "scale": ("scale", "Redis vs SQLite per turn; turns/s and CPU per turn for 1-3 nodes behind HAProxy"),
    "grace": ("grace", "reconnect grace on a mobile link with cuts: bytes re-sent and time lost per cut"),
    "redis": (
        "store_redis",
        "Redis vs SQLite: chain resolution for 1..200 turns (round trips, CPU), put+get",
    ),
}


def usage() -> str:
    lines = ["usage: loopwire bench [COMMAND] [options]   (loopwire bench COMMAND --help)", "", "commands:"]
    lines += [f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("\nwithout a command (e.g. loopwire bench --quick): agent")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = "agent"
    if args and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in COMMANDS:
            print(f"loopwire bench: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
            return 2
    try:
        module = importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
    except ModuleNotFoundError as error:
        extras = {"local": "local", "local-turn": "local", "render": "local", "token-ids": "local"}
        extras["grammar"] = "grammar-bench"
        extra = {**extras, "redis": "redis"}.get(name, "bench")
        print(
            f"loopwire bench {name} needs {error.name}, which this install lacks: "
            f"pip install 'loopwire[{extra}]'",
            file=sys.stderr,
        )
        return 2
    code: int = module.main(args)
    return code
