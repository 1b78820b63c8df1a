"""The `loopwire` command: `serve` runs the server, `--version` prints the version.

Owns argument parsing and handing a config to uvicorn; no protocol or engine logic.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from . import __version__
from .config import DEFAULT_LEASE_S, ServerConfig
from .core.limits import Limits
from .engines.factory import ENGINE_NAMES
from .engines.local.settings import DTYPES
from .engines.sim.engine import SimSettings
from .server.state import ServerSettings
from .store.factory import DEFAULT_SPEC, SPEC_HELP, WRITE_MODES

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_s(value: str) -> int:
    """Whole seconds from "3600", "90m", "12h" or "30d"."""
    text = value.strip().lower()
    scale = DURATION_UNITS.get(text[-1:], 0)
    number = text[:-1] if scale else text
    if not number.isdigit():
        raise argparse.ArgumentTypeError("expected whole seconds or a number with s, m, h or d, e.g. 30d")
    return int(number) * (scale or 1)


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected 'on' or 'off'")
    return value == "on"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire", description="A Responses API server with WebSocket mode."
    )
    parser.add_argument("--version", action="version", version=f"loopwire {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("agent", help="run the toy coding agent against a server (loopwire agent --help)")
    commands.add_parser("bench", help="the benchmarks: agent, turns, stages, ... (loopwire bench --help)")
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--engine", default="sim", choices=list(ENGINE_NAMES))
    serve.add_argument(
        "--upstream",
        metavar="URL[,URL...]",
        help="openai-chat: chat-completions server(s), e.g. http://127.0.0.1:8000/v1 (several = replicas); "
        "responses: a Responses API server, e.g. https://api.openai.com/v1; local: a llama.cpp llama-server "
        "serving the --model file, e.g. http://127.0.0.1:8080, sent each lane's prompt as token ids "
        "(token-id mode: only the tokenizer and chat template are loaded here)",
    )
    serve.add_argument(
        "--upstream-model", help="openai-chat, responses: the upstream model name (default: the client's)"
    )
    serve.add_argument(
        "--upstream-api-key-env",
        default="LOOPWIRE_UPSTREAM_API_KEY",
        metavar="VAR",
        help="openai-chat, responses: the environment variable holding the upstream key "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--model",
        metavar="DIR|FILE.gguf",
        help="local: a model directory (config.json, weights, tokenizer) or a GGUF file (converted once into "
        "a cached directory), loaded in process, never downloaded",
    )
    serve.add_argument(
        "--device", help="local: cpu (default), cuda, cuda:N or mps; the whole GPU path (docs/gpu.md)"
    )
    serve.add_argument(
        "--dtype",
        choices=list(DTYPES),
        help="local: the weights' dtype (default auto: float32 on cpu; on a GPU the config's half dtype, "
        "else bfloat16 where supported, else float16)",
    )
    serve.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other engine setting, e.g. first_byte_timeout_s=60, "
        "cache_key_via=header,user (openai-chat), transport=ws|http|auto, store=always|never|client "
        "(responses), kv_budget_bytes=2147483648 (local) (repeatable)",
    )
    serve.add_argument("--store", default=DEFAULT_SPEC, help=f"{SPEC_HELP} (default: %(default)s)")
    serve.add_argument(
        "--store-ttl",
        type=_duration_s,
        default="30d",
        metavar="DURATION",
        help="Redis: how long a stored response stays retrievable after it was created, not refreshed by "
        "use, as the hosted API keeps responses (e.g. 30d, 12h, 3600; 0 = forever; default: 30d)",
    )
    serve.add_argument(
        "--connection-lease-s",
        type=float,
        default=DEFAULT_LEASE_S,
        help="Redis: how long the WebSocket connections of a node that died still count against their "
        "key's cap (default: %(default)s)",
    )
    serve.add_argument(
        "--store-write",
        default="inline",
        choices=list(WRITE_MODES),
        help="SQLite: commit on the event loop before the terminal event (inline, survives kill -9), "
        "after it from a background writer (behind, fastest), or on a worker thread before it (through)",
    )
    serve.add_argument("--sim-ttft-ms", type=float, default=0.0)
    serve.add_argument("--sim-prefill-tps", type=float, default=0.0)
    serve.add_argument("--sim-decode-tps", type=float, default=0.0)
    serve.add_argument("--sim-prefix-cache", type=_on_off, default=True, metavar="on|off")
    serve.add_argument("--sim-seed", type=int, default=0)
    serve.add_argument(
        "--sim-context-window",
        type=int,
        default=None,
        metavar="TOKENS",
        help="sim: the simulated model's context window (default: unbounded)",
    )
    serve.add_argument(
        "--context-window",
        type=int,
        default=None,
        metavar="TOKENS",
        help="openai-chat, responses: the upstream model's context window, so turns past it are truncated, "
        "compacted or refused with context_length_exceeded (default: unknown; the local engine reads it "
        "from the model's config)",
    )
    serve.add_argument(
        "--ws-deflate",
        type=_on_off,
        default=False,
        metavar="on|off",
        help="negotiate permessage-deflate on WebSocket mode (default: off)",
    )
    serve.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a connection limit, e.g. max_in_flight=16, max_connection_age_s=3600, "
        "max_message_bytes=16777216 (repeatable)",
    )
    serve.add_argument(
        "--timing-events",
        type=_on_off,
        default=False,
        metavar="on|off",
        help="send a loopwire.timing event with the server's time breakdown before each terminal event",
    )
    serve.add_argument(
        "--graceful-shutdown-s",
        type=int,
        default=30,
        help="on SIGTERM, how long running turns may take to finish (default: %(default)s)",
    )
    serve.add_argument(
        "--resume-grace-s",
        type=float,
        default=0.0,
        help="reconnect grace: keep the lane caches of a WebSocket that dropped uncleanly this long for a "
        "new socket presenting its resume token (x-loopwire-resume); in the cache budget (default: off)",
    )
    serve.add_argument(
        "--node-id",
        default="",
        help="this node's name in resume tokens, what a load balancer routes a token on (default: random)",
    )
    serve.add_argument(
        "--drain-s",
        type=float,
        default=0.0,
        help="on SIGTERM, first answer GET /readyz with 503 for this long while still serving, so a load "
        "balancer's health check takes the node out of rotation before it stops (default: %(default)s)",
    )
    serve.add_argument(
        "--api-keys",
        metavar="FILE",
        help="accept only these bearer keys (one per line); without it the server is open for local use",
    )
    serve.add_argument(
        "--compaction-secret-file",
        metavar="FILE",
        help="the secret compaction items are signed with; every node of a deployment must share it (else "
        "$LOOPWIRE_COMPACTION_SECRET, else one generated beside the SQLite store, or in memory)",
    )
    serve.add_argument("--log-level", default="warning")
    serve.add_argument("--log-format", default="text", choices=["text", "json"])
    return parser


def parse_limits(overrides: Sequence[str]) -> Limits:
    """`NAME=VALUE` pairs over the defaults of `Limits`; ValueError names the bad one."""
    known = {field.name: field.type for field in dataclasses.fields(Limits)}
    values: dict[str, float | int] = {}
    for override in overrides:
        name, sep, raw = override.partition("=")
        if not sep or name not in known:
            raise ValueError(f"unknown limit {override!r}; known limits: {', '.join(sorted(known))}")
        try:
            value: float | int = float(raw) if known[name] in (float, "float") else int(raw)
        except ValueError:
            raise ValueError(f"limit {name} needs a number, got {raw!r}") from None
        if value <= 0:
            raise ValueError(f"limit {name} must be positive")
        values[name] = value
    return Limits(**values)  # type: ignore[arg-type]


def engine_options(args: argparse.Namespace) -> dict[str, str]:
    upstream = bool(args.upstream or args.upstream_model)
    local = bool(args.model or args.device or args.dtype)
    if args.engine == "sim" and (upstream or local or args.engine_option):
        raise ValueError(
            "--engine-option, --upstream* and --model/--device/--dtype need --engine openai-chat, "
            "responses or local"
        )
    if args.context_window is not None and args.engine not in ("openai-chat", "responses"):
        raise ValueError(
            "--context-window needs --engine openai-chat or responses (sim: --sim-context-window; local: the "
            "model's config)"
        )
    if args.upstream_model and args.engine not in ("openai-chat", "responses"):
        raise ValueError("--upstream-model needs --engine openai-chat or responses")
    if args.upstream and args.engine not in ("openai-chat", "responses", "local"):
        raise ValueError("--upstream needs --engine openai-chat, responses or local")
    if local and args.engine != "local":
        raise ValueError("--model, --device and --dtype need --engine local")
    if args.engine == "sim":
        return {}
    options: dict[str, str] = {}
    for pair in args.engine_option:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--engine-option takes NAME=VALUE, got {pair!r}")
        options[name.strip()] = value
    if args.upstream:
        options["upstream"] = args.upstream
    if args.upstream_model:
        options["model"] = args.upstream_model
    if args.context_window is not None:
        options["context_window"] = str(args.context_window)
    if args.engine == "local":
        if args.model:
            options["model"] = args.model
        if args.device:
            options["device"] = args.device
        if args.dtype:
            options["dtype"] = args.dtype
        return options
    key = os.environ.get(args.upstream_api_key_env)
    if key:
        options["api_key"] = key
    return options


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    sim = SimSettings(
        ttft_ms=args.sim_ttft_ms,
        prefill_tps=args.sim_prefill_tps,
        decode_tps=args.sim_decode_tps,
        prefix_cache=args.sim_prefix_cache,
        seed=args.sim_seed,
        context_window=args.sim_context_window,
    )
    return ServerConfig(
        host=args.host,
        port=args.port,
        engine=args.engine,
        store=args.store,
        store_write=args.store_write,
        store_ttl_s=args.store_ttl,
        connection_lease_s=args.connection_lease_s,
        engine_options=engine_options(args),
        sim=sim,
        settings=ServerSettings(
            ws_per_message_deflate=args.ws_deflate,
            graceful_shutdown_s=args.graceful_shutdown_s,
            drain_s=args.drain_s,
            resume_grace_s=args.resume_grace_s,
            node_id=args.node_id,
            timing_events=args.timing_events,
        ),
        limits=parse_limits(args.limit),
        api_keys_file=args.api_keys,
        compaction_secret_file=args.compaction_secret_file,
        log_level=args.log_level,
        log_format=args.log_format,
    )


def serve(config: ServerConfig) -> None:
    import uvicorn

    from .server.app import LoopwireApp
    from .server.coalesce import CoalescingHttpToolsProtocol, CoalescingWebSocketProtocol
    from .server.lifecycle import DrainingServer
    from .server.logs import configure as configure_logging

    config.check()
    configure_logging(config.log_level, config.log_format)
    app = LoopwireApp(config.open_state)
    print(
        f"loopwire {__version__} serving http://{config.host}:{config.port}/v1 "
        f"(engine {config.engine}, store {config.store})",
        file=sys.stderr,
        flush=True,
    )
    if config.api_keys_file is None:
        print(
            "loopwire: OPEN MODE, no --api-keys given: any bearer token is accepted (each token sees only "
            "its own responses). Do not expose this server beyond your machine.",
            file=sys.stderr,
            flush=True,
        )
    secret = config.compaction_secret()
    if not secret.shared:
        print(
            f"loopwire: compaction items are signed with a secret from {secret.source}; a deployment of "
            "several servers must share one (--compaction-secret-file or LOOPWIRE_COMPACTION_SECRET), or "
            "each reads back only its own.",
            file=sys.stderr,
            flush=True,
        )
    uvicorn_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=CoalescingHttpToolsProtocol,
        ws=CoalescingWebSocketProtocol.with_send_deadline(config.limits.send_deadline_s),
        loop="uvloop",
        lifespan="on",
        ws_max_size=config.limits.max_message_bytes,
        ws_per_message_deflate=config.settings.ws_per_message_deflate,
        log_level=config.log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=config.settings.graceful_shutdown_s,
    )

    def on_drain() -> None:
        app.draining = True

    DrainingServer(uvicorn_config, drain_s=config.settings.drain_s, on_drain=on_drain).run()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["agent"]:  # `loopwire agent ...`: the coding agent's own command line
        from .agent.cli import main as agent_main

        return agent_main(arguments[1:])
    if arguments[:1] == ["bench"]:  # `loopwire bench ...`: the benchmark's own command line
        from .bench.cli import main as bench_main

        return bench_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command != "serve":
        parser.print_help()
        return 2
    try:
        config = config_from_args(args)
        serve(config)
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
