"""One Redis client for the process, behind a breaker: every call has a bounded time, and once a call found
Redis unreachable or hung, calls fail at once (StoreUnavailable) while a background probe retries with
exponential backoff; the first answer closes the breaker again.

Owns the store spec's URL forms, the client (standalone, TLS, Sentinel, Cluster), the Lua call with its
NOSCRIPT fallback, and the count of round trips; it knows nothing about records or limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from ..base import StoreUnavailable

log = logging.getLogger("loopwire.store.redis")

T = TypeVar("T")

STANDALONE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = STANDALONE_SCHEMES + SENTINEL_SCHEMES + CLUSTER_SCHEMES
EXAMPLE = "redis://127.0.0.1:6379/0"

CONNECT_TIMEOUT_S = 1.0
"""Opening a connection (TCP, TLS, AUTH, SELECT) takes at most this long."""
COMMAND_TIMEOUT_S = 2.0
"""A command (one round trip) takes at most this long; past it Redis counts as down."""
MAX_CONNECTIONS = 64
"""Pooled connections per process; more concurrent calls wait for one (within the connect timeout)."""


def is_redis_spec(spec: str) -> bool:
    scheme, sep, _ = spec.strip().partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


@dataclass(frozen=True, slots=True)
class RedisSpec:
    """A parsed `--store` URL. `kind` is standalone (redis://, rediss://, unix://), sentinel
    (redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]) or cluster
    (redis+cluster://[user:pass@]host:port[,host:port...])."""

    url: str
    kind: str
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The spec without credentials, for messages and logs."""
        if self.kind == "standalone":
            parts = urlsplit(self.url)
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            return f"{parts.scheme}://{netloc}{parts.path}"
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        scheme = ("rediss+" if self.tls else "redis+") + self.kind
        tail = f"/{self.service}/{self.db}" if self.kind == "sentinel" else ""
        return f"{scheme}://{hosts}{tail}"


def parse_spec(spec: str) -> RedisSpec:
    """Parse a redis store URL; ValueError with the expected form when it is malformed."""
    url = spec.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"bad store spec {spec!r}: expected a URL like {EXAMPLE!r}")
    tls = scheme.startswith("rediss")
    if scheme in STANDALONE_SCHEMES:
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"bad store spec {spec!r}: no host; expected e.g. {EXAMPLE!r}")
        try:
            _ = parts.port
            db = _db(parts.path.strip("/") or "0", spec)
        except ValueError as error:
            raise ValueError(f"bad store spec {spec!r}: {error}") from None
        return RedisSpec(url=url, kind="standalone", tls=tls, db=db if scheme != "unix" else 0)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts: list[tuple[str, int]] = []
    default_port = 26379 if scheme in SENTINEL_SCHEMES else 6379
    for item in filter(None, hostlist.split(",")):
        host, colon, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        try:
            hosts.append((host or item, int(port) if colon else default_port))
        except ValueError:
            raise ValueError(f"bad store spec {spec!r}: bad port in {item!r}") from None
    if not hosts:
        raise ValueError(f"bad store spec {spec!r}: no host")
    options = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    path = [unquote(piece) for piece in parts.path.split("/") if piece]
    common = {
        "url": url,
        "tls": tls,
        "hosts": tuple(hosts),
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "options": options,
    }
    if scheme in SENTINEL_SCHEMES:
        if not 1 <= len(path) <= 2:
            raise ValueError(
                f"bad store spec {spec!r}: expected redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
            )
        db = _db(path[1], spec) if len(path) == 2 else 0
        return RedisSpec(kind="sentinel", service=path[0], db=db, **common)  # type: ignore[arg-type]
    if path and path != ["0"]:
        raise ValueError(f"bad store spec {spec!r}: Redis Cluster has only database 0")
    return RedisSpec(kind="cluster", **common)  # type: ignore[arg-type]


def _db(text: str, spec: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad store spec {spec!r}: the database must be a number, got {text!r}")
    return int(text)


def _require_redis() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ValueError(
            "a redis store needs redis-py: pip install 'loopwire[redis]' (redis and hiredis)"
        ) from None


def _client_options(connect_timeout_s: float, command_timeout_s: float) -> dict[str, Any]:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": command_timeout_s,
        # One immediate retry on a broken connection: a pooled socket may have died with a restarted Redis.
        # Never on a timeout: a hung Redis must cost one timeout, not several.
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "client_name": "loopwire",
    }


def build_client(spec: RedisSpec, connect_timeout_s: float, command_timeout_s: float) -> Any:
    """The redis-py asyncio client for `spec` (no connection is opened yet)."""
    _require_redis()
    options = _client_options(connect_timeout_s, command_timeout_s)
    if spec.kind == "standalone":
        from redis.asyncio import BlockingConnectionPool, Redis

        pool = BlockingConnectionPool.from_url(
            spec.url, max_connections=MAX_CONNECTIONS, timeout=connect_timeout_s, **options
        )
        return Redis(connection_pool=pool)
    auth: dict[str, Any] = {"username": spec.username, "password": spec.password}
    if spec.kind == "sentinel":
        from redis.asyncio import Redis
        from redis.asyncio.sentinel import Sentinel

        sentinel_auth = (
            {"password": spec.options["sentinel_password"]} if "sentinel_password" in spec.options else {}
        )
        sentinel = Sentinel(
            list(spec.hosts),
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s,
            sentinel_kwargs={
                "socket_connect_timeout": connect_timeout_s,
                "socket_timeout": command_timeout_s,
                "ssl": spec.tls,
                **sentinel_auth,
            },
        )
        return sentinel.master_for(
            spec.service, redis_class=Redis, db=spec.db, ssl=spec.tls, **auth, **options
        )
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in spec.hosts],
        ssl=spec.tls,
        max_connections=MAX_CONNECTIONS,
        **auth,
        **options,
    )


class LuaScript:
    """A Lua script called by its SHA1 (EVALSHA), loaded by EVAL when Redis does not know it yet."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisLink:
    """The client and its breaker. `round_trips` counts every request sent to Redis (a pipeline is one);
    the probes sent while Redis is down are not counted."""

    def __init__(
        self,
        client: Any,
        where: str,
        *,
        cluster: bool = False,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
    ) -> None:
        self.client = client
        self.where = where
        self.cluster = cluster
        self.round_trips = 0
        # The outer bound on one call: a connect, a command and the one reconnect-retry.
        self.call_timeout_s = 2 * connect_timeout_s + command_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._down_since: float | None = None
        self._failure = ""
        self._probe: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def available(self) -> bool:
        """False from a failed call until a probe reaches Redis again; calls meanwhile fail at once."""
        return self._down_since is None and not self._closed

    async def call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run `op(client)` as one bounded call. Redis unreachable, hung or refusing: StoreUnavailable."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self._closed:
            raise StoreUnavailable(f"redis store at {self.where} is closed")
        if self._down_since is not None:
            raise StoreUnavailable(f"redis at {self.where} is unreachable: {self._failure}")
        try:
            async with asyncio.timeout(self.call_timeout_s):
                return await op(self.client)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            self._trip(exc)
            raise StoreUnavailable(f"redis at {self.where} is unreachable: {exc!r}") from exc
        except RedisError as exc:  # reached, but refused (OOM, MISCONF, READONLY, a script error)
            raise StoreUnavailable(f"redis at {self.where} refused: {exc}") from exc

    def _trip(self, exc: BaseException) -> None:
        self._failure = repr(exc)
        if self._down_since is not None or self._closed:
            return
        log.error(
            "redis at %s is unreachable; store calls fail fast until it answers again: %r", self.where, exc
        )
        self._down_since = time.monotonic()
        self._probe = asyncio.get_running_loop().create_task(
            self._probe_until_up(), name="loopwire-redis-probe"
        )

    async def _probe_until_up(self) -> None:
        """PING with exponential backoff (capped) until Redis answers; no request waits on it."""
        from redis.exceptions import RedisError

        delay = self.backoff_initial_s
        while True:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(self.call_timeout_s):
                    await self.client.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                self._failure = repr(exc)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            assert self._down_since is not None
            log.warning(
                "redis at %s answers again after %.1f s", self.where, time.monotonic() - self._down_since
            )
            self._down_since = None
            return

    async def script(self, script: LuaScript, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        """One EVALSHA; after a Redis restart (NOSCRIPT) an EVAL in the same call."""
        from redis.exceptions import NoScriptError

        async def run(client: Any) -> Any:
            self.round_trips += 1
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                self.round_trips += 1
                return await client.eval(script.source, len(keys), *keys, *args)

        return await self.call(run)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of string keys in one round trip (on a cluster, the keys must share a slot)."""

        async def run(client: Any) -> list[bytes | None]:
            self.round_trips += 1
            return list(await client.mget(keys))

        return await self.call(run)

    async def scripts(
        self, calls: Sequence[tuple[LuaScript, Sequence[str], Sequence[str | bytes | int]]]
    ) -> list[Any]:
        """Several script calls in one pipelined round trip (EVAL: a pipeline cannot fall back per call).
        Atomic (MULTI) on a single Redis; on a cluster each call is atomic on its own."""

        async def run(client: Any) -> list[Any]:
            self.round_trips += 1
            async with client.pipeline(transaction=not self.cluster) as pipe:
                for script, keys, args in calls:
                    pipe.eval(script.source, len(keys), *keys, *args)
                return list(await pipe.execute())

        return await self.call(run)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
        close = getattr(self.client, "aclose", None) or self.client.close
        try:
            await asyncio.wait_for(close(), self.call_timeout_s)
        except Exception as exc:  # closing a client whose server is gone must not fail the shutdown
            log.debug("closing the redis client: %r", exc)


def open_link(
    spec: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, command_timeout_s: float = COMMAND_TIMEOUT_S
) -> RedisLink:
    parsed = parse_spec(spec)
    client = build_client(parsed, connect_timeout_s, command_timeout_s)
    return RedisLink(
        client,
        parsed.where,
        cluster=parsed.kind == "cluster",
        connect_timeout_s=connect_timeout_s,
        command_timeout_s=command_timeout_s,
    )
