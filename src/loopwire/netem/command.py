"""The command line of `python -m loopwire.netem`: parse options, run one emulator until told to stop.

Owns argument parsing, signal handling and the printed summary; it must not shape traffic itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict

from .emulator import DEFAULT_MAX_HELD_BYTES, LinkEmulator, parse_address
from .profiles import MBIT, PROFILES, LinkProfile

TOTALS_PREFIX = "netem-totals: "
"""On SIGUSR1 the emulator prints this, then its LinkTotals as one JSON object, on one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loopwire.netem",
        description="A user-space TCP link emulator: forwards every connection accepted on --listen to "
        "--target, with one-way delay, jitter and a bandwidth cap in each direction (up = towards the "
        "target).",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:9000", help="host:port to accept on (default %(default)s)"
    )
    parser.add_argument("--target", required=False, help="host:port to forward to, e.g. 127.0.0.1:8000")
    parser.add_argument("--profile", default="loopback", choices=sorted(PROFILES), help="default %(default)s")
    parser.add_argument("--rtt-ms", type=float, help="override: round-trip delay, split evenly both ways")
    parser.add_argument("--jitter-ms", type=float, help="override: jitter in each direction")
    parser.add_argument("--up-mbit", type=float, help="override: bandwidth client -> target, Mbit/s")
    parser.add_argument("--down-mbit", type=float, help="override: bandwidth target -> client, Mbit/s")
    parser.add_argument("--queue-limit-kb", type=int, help="override: link queue limit per direction, KiB")
    parser.add_argument("--seed", type=int, default=0, help="jitter RNG seed (default %(default)s)")
    parser.add_argument(
        "--max-held-kb",
        type=int,
        default=DEFAULT_MAX_HELD_BYTES // 1024,
        help="most bytes held per direction of a connection before reading pauses (default %(default)s)",
    )
    parser.add_argument(
        "--no-handshake", action="store_true", help="do not hold a new connection's first bytes for one RTT"
    )
    parser.add_argument(
        "--stats-every", type=float, default=0.0, help="print totals every N seconds (0: only at exit)"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="uvloop if present (auto)",
    )
    parser.add_argument("--list-profiles", action="store_true", help="print the profiles and exit")
    return parser


def profile_from(args: argparse.Namespace) -> LinkProfile:
    profile = PROFILES[args.profile]
    changed = any(
        value is not None
        for value in (args.rtt_ms, args.jitter_ms, args.up_mbit, args.down_mbit, args.queue_limit_kb)
    )
    if not changed:
        return profile
    return profile.with_changes(
        rtt_ms=args.rtt_ms,
        jitter_ms=args.jitter_ms,
        up_bps=None if args.up_mbit is None else args.up_mbit * MBIT,
        down_bps=None if args.down_mbit is None else args.down_mbit * MBIT,
        queue_limit_bytes=None if args.queue_limit_kb is None else args.queue_limit_kb * 1024,
        name=f"{profile.name} (modified)",
    )


async def serve(args: argparse.Namespace, profile: LinkProfile) -> None:
    host, port = parse_address(args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    emulator: LinkEmulator | None = None

    def print_totals() -> None:
        if emulator is not None:
            print(f"{TOTALS_PREFIX}{json.dumps(asdict(emulator.totals()), sort_keys=True)}", flush=True)

    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGUSR1, print_totals)
    emulator = LinkEmulator(
        args.target,
        profile,
        host=host,
        port=port,
        seed=args.seed,
        max_held_bytes=args.max_held_kb * 1024,
        emulate_handshake=not args.no_handshake,
    )
    async with emulator:
        print(
            f"netem: {host}:{emulator.port} -> {emulator.target[0]}:{emulator.target[1]}; "
            f"{profile.describe()}",
            flush=True,
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.stats_every or None):
                    await stop.wait()
            if not stop.is_set():
                print(f"netem: {summary(emulator)}", flush=True)
        print(f"netem: stopping; {summary(emulator)}", flush=True)


def summary(emulator: LinkEmulator) -> str:
    totals = emulator.totals()
    timer = emulator.timer_stats()
    return (
        f"{totals.connections_accepted} connections ({totals.connections_open} open), "
        f"{totals.bytes_up} B up, {totals.bytes_down} B down; delivery timer error mean "
        f"{timer.mean_error_ms:+.3f} ms, mean |error| {timer.mean_abs_error_ms:.3f} ms over {timer.count}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_profiles:
        for profile in PROFILES.values():
            print(profile.describe())
        return 0
    if not args.target:
        print("python -m loopwire.netem: --target host:port is required", file=sys.stderr)
        return 2
    try:
        profile = profile_from(args)
        parse_address(args.listen)
        parse_address(args.target)
    except ValueError as error:
        print(f"python -m loopwire.netem: {error}", file=sys.stderr)
        return 2
    runner = asyncio.run
    if args.loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                print("python -m loopwire.netem: uvloop is not installed", file=sys.stderr)
                return 2
        else:
            runner = uvloop.run
    try:
        runner(serve(args, profile))
    except OSError as error:
        print(f"python -m loopwire.netem: {error}", file=sys.stderr)
        return 1
    return 0
