"""A bare uvicorn WebSocket app that answers every frame with a fixed 21-event turn: the transport floor
of `loopwire bench turns`.

No parsing, no state, no engine: what the same client measures here is what loopwire cannot go below on
this machine. Owns that app only; must not import the server.

    python -m loopwire.bench.echo PORT
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

PAD = "p" * 150
EVENTS = [
    f'{{"type":"response.output_text.delta","delta":"w{i}","sequence_number":{i},"pad":"{PAD}"}}'
    for i in range(20)
]
EVENTS.append(
    '{"type":"response.completed","response":{"id":"resp_echo","output":[{"type":"function_call",'
    '"call_id":"call_echo","name":"read_file","arguments":"{}"}],"pad":"' + "q" * 1800 + '"}}'
)


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "http":  # readiness probes
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"echo"})
        return
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        for event in EVENTS:
            await send({"type": "websocket.send", "text": event})


def main(port: int) -> None:
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        ws="websockets-sansio",
        loop="uvloop",
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
