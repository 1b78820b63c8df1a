"""API keys: refused keys get 401 over HTTP and on the WebSocket upgrade; each key sees only its own stored
responses, indistinguishable from missing ones, over HTTP and WebSocket mode alike. In open mode (no key
file) any token is accepted and still names its owner."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import websockets
from conftest import ServerProcess, make_client

from loopwire.protocol.errors import ProtocolError
from loopwire.server.auth import ApiKeys, owner_of

KEY_A, KEY_B = "sk-loopwire-test-a", "sk-loopwire-test-b"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("auth")
    keys = tmp / "keys.txt"
    keys.write_text(f"# loopwire test keys\n{KEY_A}\n\n{KEY_B}\n")
    server = ServerProcess(f"sqlite:{tmp}/db.sqlite", tmp / "server.log", ("--api-keys", str(keys))).start()
    yield server
    server.stop()


def client_for(server: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def test_unknown_or_missing_key_is_refused_with_401(keyed: ServerProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        client_for(keyed, "sk-not-a-key").responses.create(model="sim", input="hi")
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    request = urllib.request.Request(
        keyed.base_url + "/responses", data=b'{"model":"sim","input":"x"}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 401
    assert client_for(keyed, KEY_A).responses.create(model="sim", input="hi").status == "completed"


async def test_websocket_upgrade_with_a_bad_key_is_refused_before_accepting(keyed: ServerProcess) -> None:
    url = keyed.base_url.replace("http://", "ws://") + "/responses"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-nope"}):
            pass
    assert refused.value.response.status_code == 401
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY_A}"}) as socket:
        assert socket.response is not None and socket.response.status_code == 101


async def test_each_key_sees_only_its_own_responses(keyed: ServerProcess) -> None:
    owner, other = client_for(keyed, KEY_A), client_for(keyed, KEY_B)
    stored = owner.responses.create(model="sim", input="my secret plan")
    assert owner.responses.retrieve(stored.id).id == stored.id
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(stored.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(stored.id)
    with pytest.raises(openai.BadRequestError) as chained:
        other.responses.create(model="sim", input="continue", previous_response_id=stored.id)
    assert chained.value.code == "previous_response_not_found"

    async_other = openai.AsyncOpenAI(base_url=keyed.base_url, api_key=KEY_B, max_retries=0)
    async with async_other.responses.connect() as connection:
        await connection.response.create(model="sim", input="continue", previous_response_id=stored.id)
        event = await connection.recv()
        assert event.type == "error" and event.error.code == "previous_response_not_found"  # type: ignore[union-attr]
    await async_other.close()

    async_owner = openai.AsyncOpenAI(base_url=keyed.base_url, api_key=KEY_A, max_retries=0)
    async with async_owner.responses.connect() as connection:
        await connection.response.create(model="sim", input="continue", previous_response_id=stored.id)
        async for event in connection:
            if event.type in ("response.completed", "error"):
                assert event.type == "response.completed"
                break
    await async_owner.close()
    assert owner.responses.retrieve(stored.id).id == stored.id  # untouched by the other key's attempts


def test_open_mode_still_separates_tokens(server: ServerProcess) -> None:
    first = make_client(server.base_url)
    stored = first.responses.create(model="sim", input="mine")
    stranger = openai.OpenAI(base_url=server.base_url, api_key="some-other-token", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(stored.id)
    assert first.responses.retrieve(stored.id).id == stored.id


def test_api_key_parsing_at_its_edges(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("  # a comment\nkey-one\n   key-two  \n\n")
    keys = ApiKeys.from_file(keys_file)
    assert not keys.open
    assert keys.owner_for(b"Bearer key-one") == owner_of("key-one")
    assert keys.owner_for(b"bearer   key-two ") == owner_of("key-two")
    for refused in (None, b"", b"Bearer", b"Bearer ", b"Basic key-one", b"Bearer key-three", b"key-one"):
        with pytest.raises(ProtocolError) as error:
            keys.owner_for(refused)
        assert error.value.status == 401
    assert owner_of("key-one") != "key-one" and len(owner_of("key-one")) == 32
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError):
        ApiKeys.from_file(tmp_path / "empty")
    open_mode = ApiKeys()
    assert open_mode.open and open_mode.owner_for(None) == ""
    assert open_mode.owner_for(b"Bearer anything") == owner_of("anything")
