"""`loopwire bench gateway --engine openai-chat|responses`: loopwire's overhead as a gateway, over a 50-turn
agent loop against a zero-latency upstream in its own process, side by side with the client talking to
that upstream directly.

Owns the command line; the two benchmarks are gateway_chat and gateway_responses.

    loopwire bench gateway --engine openai-chat --turns 50 --conversations 10 --output-bytes 6000
    loopwire bench gateway --engine openai-chat \
        --b-server-arg=--engine-option --b-server-arg=message_cache_bytes=0
    loopwire bench gateway --engine responses --turns 50 --conversations 6 --output-bytes 6000
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from . import gateway_chat, gateway_responses
from .table import write_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire bench gateway",
        description="loopwire in front of a zero-latency upstream vs the client talking to it directly.",
        epilog="openai-chat transports: direct, ws, http-full (ws-b, http-full-b with --b-server-arg); "
        "responses transports: direct, ws, ws-http.",
    )
    parser.add_argument("--engine", choices=["openai-chat", "responses"], default="openai-chat")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument("--transports", nargs="+", help="default: every transport of the engine's benchmark")
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for loopwire serve")
    parser.add_argument(
        "--b-server-arg",
        action="append",
        default=None,
        help="openai-chat: start a second loopwire with these extra arguments (repeatable, may be "
        "empty: --b-server-arg=) and run ws-b and http-full-b against it, alternating with the rest",
    )
    parser.add_argument(
        "--upstream",
        choices=["fake", "sim"],
        default="fake",
        help="responses: the zero-latency fake (default), or a real loopwire on the sim engine",
    )
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = gateway_chat if args.engine == "openai-chat" else gateway_responses
    known = module.TRANSPORTS + (gateway_chat.B_TRANSPORTS if module is gateway_chat else [])
    args.transports = args.transports or list(module.TRANSPORTS)
    unknown = [name for name in args.transports if name not in known]
    if unknown:
        names = ", ".join(known)
        parser.error(f"--engine {args.engine} has no transport {', '.join(unknown)}; known: {names}")
    if args.b_server_arg is not None and module is not gateway_chat:
        parser.error("--b-server-arg is for --engine openai-chat")
    write_summary(args.json, args, module.run(args))
    return 0
