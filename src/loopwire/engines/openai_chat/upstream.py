"""The connection pool to the upstream replicas: sticky replica choice, cooldowns, timed streaming reads.

Owns HTTP (aiohttp keep-alive pool), rendezvous hashing, replica health and turning transport failures
into UpstreamFailure; must not parse chunks, nor decide whether a turn is retried (that depends on output
already sent, which only the engine knows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b

import aiohttp

from ..base import EngineError
from ..common.upstream_errors import answer_detail, context_overflow
from ..common.upstream_http import KeepalivePool, ReadClock, drain, read_error_body, upstream_headers
from ..common.upstream_models import models_url, upstream_models
from .settings import CHAT_COMPLETIONS_PATH, OpenAIChatSettings

log = logging.getLogger("loopwire.upstream")

MAX_COMPLETION_BODY_BYTES = 64 * 1024 * 1024
"""The largest non-streamed completion body accepted from a server that ignored `stream: true`."""


class UpstreamFailure(EngineError):
    """A replica could not serve the request. `retryable`: nothing of the turn was produced by this
    failure's nature (no connection, a 5xx, a cut before any output), so another replica may take it.
    `replica_down`: the replica itself looks unhealthy and goes into cooldown. `status`: the HTTP status
    of a refusal (None for transport failures)."""

    def __init__(
        self, message: str, *, code: str, retryable: bool, replica_down: bool, status: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable
        self.replica_down = replica_down
        self.status = status


@dataclass(frozen=True, slots=True)
class Replica:
    number: int  # 1-based, for messages that must not reveal upstream addresses to clients
    endpoint: str
    salt: bytes

    @property
    def label(self) -> str:
        return f"upstream replica {self.number}"


class UpstreamStream:
    """One 200 answer being read: `read()` returns the bytes of each network read (b"" at the end),
    enforcing the first-byte deadline, then the idle timeout between reads."""

    __slots__ = ("_clock", "_response", "replica")

    def __init__(self, response: aiohttp.ClientResponse, replica: Replica, clock: ReadClock) -> None:
        self._response = response
        self._clock = clock
        self.replica = replica

    @property
    def got_bytes(self) -> bool:
        """Whether any body bytes have come."""
        return self._clock.got_data

    @property
    def streaming(self) -> bool:
        """False when the server answered one JSON document instead of server-sent events."""
        return self._response.content_type != "application/json"

    async def read(self) -> bytes:
        clock = self._clock
        try:
            async with asyncio.timeout_at(clock.deadline()):
                data = await self._response.content.readany()
        except TimeoutError:
            first = not clock.got_data
            what = "send the first bytes" if first else f"send anything for {clock.idle_s:g} s"
            raise UpstreamFailure(
                f"{self.replica.label} did not {what}",
                code="upstream_timeout",
                retryable=False,
                replica_down=first,
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            log.warning("%s (%s) cut the stream: %r", self.replica.label, self.replica.endpoint, error)
            raise UpstreamFailure(
                f"{self.replica.label} closed the connection mid-stream",
                code="upstream_error",
                retryable=True,
                replica_down=True,
            ) from None
        if data:
            clock.got_data = True
        return data

    async def read_all(self, limit: int = MAX_COMPLETION_BODY_BYTES) -> bytes:
        parts: list[bytes] = []
        size = 0
        while data := await self.read():
            size += len(data)
            if size > limit:
                raise UpstreamFailure(
                    f"{self.replica.label} sent a completion larger than {limit} bytes",
                    code="upstream_error",
                    retryable=False,
                    replica_down=False,
                )
            parts.append(data)
        return b"".join(parts)

    async def drain(self) -> None:
        """Read to the end of the body (briefly) so the keep-alive connection goes back to the pool."""
        await drain(self._response)

    def abort(self) -> None:
        """Close the connection instead of reusing it (its server ended the answer abnormally)."""
        self._response.close()

    def close(self) -> None:
        """Release the connection: reused when the body was read to its end, else closed (which also
        tells the upstream to stop generating)."""
        self._response.release()


class UpstreamPool:
    """Keep-alive connections to every replica and the choice of replica for each request."""

    def __init__(self, settings: OpenAIChatSettings) -> None:
        self.settings = settings
        self.replicas = tuple(
            Replica(number, endpoint, endpoint.encode("utf-8"))
            for number, endpoint in enumerate(settings.endpoints, start=1)
        )
        self._down_until: dict[str, float] = {}
        self._turns = 0  # round-robin position
        self._http = KeepalivePool(
            "openai-chat",
            limit=settings.max_connections,
            keepalive_s=settings.keepalive_s,
            connect_timeout_s=settings.connect_timeout_s,
            headers=upstream_headers(
                settings.api_key, settings.extra_headers, {"Accept": "text/event-stream"}
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- choosing a replica --------------------------------------------------------------------------

    def ranking(self, affinity: str) -> list[Replica]:
        """Every replica, best first, by rendezvous hashing of `affinity`: a key keeps its replica while
        the set is unchanged, and losing a replica moves only that replica's keys."""
        if len(self.replicas) == 1:
            return list(self.replicas)
        key = affinity.encode("utf-8") + b"\x00"

        def score(replica: Replica) -> bytes:
            return blake2b(key + replica.salt, digest_size=8).digest()

        return sorted(self.replicas, key=score, reverse=True)

    def rotation(self) -> list[Replica]:
        """Every replica, starting one further on each call: round-robin routing, which ignores lanes."""
        start = self._turns % len(self.replicas)
        self._turns += 1
        return list(self.replicas[start:] + self.replicas[:start])

    def candidates(self, affinity: str) -> list[Replica]:
        """The ranking (or, with round-robin routing, the rotation) with replicas in cooldown moved to the
        end (still tried when all else failed)."""
        ranked = self.rotation() if self.settings.routing == "round-robin" else self.ranking(affinity)
        now = time.monotonic()
        down = self._down_until
        if not down:
            return ranked
        healthy = [replica for replica in ranked if down.get(replica.endpoint, 0.0) <= now]
        cooling = [replica for replica in ranked if down.get(replica.endpoint, 0.0) > now]
        return healthy + cooling

    def report(self, replica: Replica, failure: UpstreamFailure) -> None:
        if failure.replica_down and self.settings.cooldown_s > 0:
            self._down_until[replica.endpoint] = time.monotonic() + self.settings.cooldown_s
            log.warning(
                "%s (%s) is cooling down for %g s: %s",
                replica.label,
                replica.endpoint,
                self.settings.cooldown_s,
                failure,
            )

    def report_success(self, replica: Replica) -> None:
        if self._down_until:
            self._down_until.pop(replica.endpoint, None)

    def cooling_down(self, replica: Replica) -> bool:
        return self._down_until.get(replica.endpoint, 0.0) > time.monotonic()

    async def models(self) -> list[str] | None:
        """The model ids the first replica that answers lists on `GET /models` (None when none does)."""
        settings = self.settings
        for replica in self.candidates(""):
            url = models_url(replica.endpoint, CHAT_COMPLETIONS_PATH)
            found = await upstream_models(
                self._http.client(), url, settings.connect_timeout_s + settings.first_byte_timeout_s
            )
            if found is not None:
                return found
        return None

    # -- one request ---------------------------------------------------------------------------------

    async def open(self, replica: Replica, body: bytes, headers: Mapping[str, str]) -> UpstreamStream:
        """POST the request and wait for a 200; any other outcome is an UpstreamFailure."""
        http = self._http.client()
        clock = ReadClock(self.settings.first_byte_timeout_s, self.settings.idle_timeout_s)
        label = replica.label
        try:
            async with asyncio.timeout_at(clock.deadline()):
                for attempt in (1, 2):
                    try:
                        response = await http.post(
                            replica.endpoint,
                            data=body,
                            headers={"Content-Type": "application/json", **headers},
                            allow_redirects=False,
                        )
                        break
                    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as dropped:
                        # the connection died before an answer (a keep-alive one the server had closed,
                        # or llama-cpp-python resetting the one after a failed stream): once more, anew
                        if attempt == 2 or isinstance(dropped, aiohttp.ClientConnectorError):
                            raise
                        log.info("%s dropped the connection before answering; retrying once", label)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamFailure(
                f"{label} did not accept a connection within {self.settings.connect_timeout_s:g} s",
                code="upstream_timeout",
                retryable=True,
                replica_down=True,
            ) from None
        except TimeoutError:
            raise UpstreamFailure(
                f"{label} did not answer within {self.settings.first_byte_timeout_s:g} s",
                code="upstream_timeout",
                retryable=False,
                replica_down=True,
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            log.warning("%s (%s) could not be reached: %r", label, replica.endpoint, error)
            raise UpstreamFailure(
                f"{label} could not be reached", code="upstream_error", retryable=True, replica_down=True
            ) from None
        if response.status == 200:
            return UpstreamStream(response, replica, clock)
        data = await read_error_body(response, clock.deadline())
        detail = answer_detail(data, response.reason)
        overflow = context_overflow(data, detail) if 400 <= response.status < 500 else None
        if overflow is not None:  # the same prompt fails on every replica, and is no replica's fault
            raise UpstreamFailure(
                str(overflow), code=overflow.code, retryable=False, replica_down=False, status=response.status
            )
        server_side = response.status >= 500
        raise UpstreamFailure(
            f"{label} answered HTTP {response.status}: {detail}",
            code="upstream_error",
            retryable=server_side,
            replica_down=server_side,
            status=response.status,
        )
