"""Server configuration as one typed record, built from the command line or from code.

Owns option names, defaults and turning them into a ServerState; starts nothing by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .engines.factory import build_engine, check_options
from .engines.sim.engine import SimEngine, SimSettings
from .protocol import compaction
from .server import compaction_secret
from .server.auth import ApiKeys
from .server.compaction_secret import CompactionSecret
from .server.state import ServerSettings, ServerState
from .session.limits import Limits
from .store.factory import DEFAULT_SPEC, WRITE_MODES, open_store


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "sim"
    store: str = DEFAULT_SPEC
    store_write: str = "inline"
    sim: SimSettings = field(default_factory=SimSettings)
    engine_options: dict[str, str] = field(default_factory=dict)
    """Options of engines other than sim (see engines/factory.py), e.g. {"upstream": "http://h:8000/v1"}."""
    limits: Limits = field(default_factory=Limits)
    settings: ServerSettings = field(default_factory=ServerSettings)
    log_level: str = "warning"
    log_format: str = "text"
    api_keys_file: str | None = None
    compaction_secret_file: str | None = None
    """Signs compaction payloads; every node of a deployment needs the same one (else the environment's
    LOOPWIRE_COMPACTION_SECRET, else one generated beside the SQLite store, or in memory)."""
    _secret: CompactionSecret | None = field(default=None, init=False, repr=False)

    def compaction_secret(self) -> CompactionSecret:
        """Resolved once, so the startup log and the running server name the same secret."""
        if self._secret is None:
            self._secret = compaction_secret.resolve(
                self.compaction_secret_file, self.store, dict(os.environ)
            )
        return self._secret

    def build_state(self) -> ServerState:
        self.check()
        limits = self.limits
        compaction.configure(
            compaction.SummaryCodec(
                self.compaction_secret().secret,
                limits.max_compaction_payload_chars,
                limits.max_compaction_summary_bytes,
            )
        )
        store = open_store(self.store, write=self.store_write)
        engine = (
            SimEngine(self.sim) if self.engine == "sim" else build_engine(self.engine, **self.engine_options)
        )
        return ServerState(
            engine=engine,
            store=store,
            limits=self.limits,
            settings=self.settings,
            api_keys=self.api_keys(),
        )

    def api_keys(self) -> ApiKeys:
        if self.api_keys_file is None:
            return ApiKeys()
        try:
            return ApiKeys.from_file(self.api_keys_file)
        except OSError as error:
            raise ValueError(
                f"cannot read the API key file {self.api_keys_file!r}: {error.strerror}"
            ) from None

    async def open_state(self) -> ServerState:
        """The state, built inside the running event loop (lifespan startup)."""
        return self.build_state()

    def check(self) -> None:
        """Raise ValueError for a configuration that cannot start."""
        if self.engine == "sim":
            if self.engine_options:
                raise ValueError("the sim engine is set with --sim-* options, not engine options")
        else:
            check_options(self.engine, self.engine_options)
        if self.store_write not in WRITE_MODES:
            raise ValueError(f"store_write must be one of {', '.join(WRITE_MODES)}")
        self.api_keys()
        self.compaction_secret()
        if not (self.store == "memory" or self.store.startswith("sqlite:")):
            raise ValueError(f"unknown store spec {self.store!r}: expected 'memory' or 'sqlite:PATH'")
