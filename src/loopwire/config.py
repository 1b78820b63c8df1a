"""Server configuration as one typed record, built from the command line or from code.

Owns option names, defaults and turning them into a ServerState; starts nothing by itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .core.limits import Limits
from .engines.factory import build_engine, check_options
from .engines.sim.engine import SimEngine, SimSettings
from .protocol import compaction
from .server import compaction_secret
from .server.admission import Admission
from .server.auth import ApiKeys
from .server.compaction_secret import CompactionSecret
from .server.state import ServerSettings, ServerState
from .store.base import Store
from .store.factory import DEFAULT_SPEC, WRITE_MODES, check_spec, open_store, redis_store_of
from .store.redis.store import DEFAULT_TTL_S

DEFAULT_LEASE_S = 15.0


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "sim"
    store: str = DEFAULT_SPEC
    store_write: str = "inline"
    store_ttl_s: int = DEFAULT_TTL_S
    """Redis: how long a stored response stays retrievable (0 = forever)."""
    connection_lease_s: float = DEFAULT_LEASE_S
    """Redis: how long a dead node's WebSocket connections still count against their key's cap."""
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
        store = open_store(self.store, write=self.store_write, ttl_s=self.store_ttl_s)
        engine = (
            SimEngine(self.sim) if self.engine == "sim" else build_engine(self.engine, **self.engine_options)
        )
        return ServerState(
            engine=engine,
            store=store,
            limits=self.limits,
            settings=self.settings,
            api_keys=self.api_keys(),
            shared_admission=self._shared_admission(store),
        )

    def _shared_admission(self, store: Store) -> Admission | None:
        """With a Redis store, the rate and connection limits hold across every node using it."""
        redis_store = redis_store_of(store)
        if redis_store is None:
            return None
        from .server.shared_admission import RedisAdmission

        return RedisAdmission(redis_store, self.limits, lease_s=self.connection_lease_s)

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
        check_spec(self.store)
        if self.store_ttl_s < 0:
            raise ValueError("the store TTL must be >= 0 seconds (0 keeps responses forever)")
        if self.settings.resume_grace_s < 0:
            raise ValueError("--resume-grace-s must be >= 0 seconds (0: off)")
        if self.settings.node_id and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.settings.node_id):
            raise ValueError("--node-id takes 1-32 letters, digits, '_' or '-'")
        if self.settings.drain_s < 0:
            raise ValueError("--drain-s must be >= 0 seconds")
        if self.connection_lease_s <= 0:
            raise ValueError("the connection lease must be > 0 seconds")
