"""The EAS queue's watch websocket (inference/eas/watch.py) through the real ASGI application
(origin check, auth middleware, the Channels router, the consumer) and the real database, with the
queue services of inference/eas/queues.py filling and committing the sink.

The database is transactional: the consumer's queries run through `database_sync_to_async`.
The last test runs the deployed web server (daphne) over real sockets: pings are answered, and a
client that drops the TCP connection without a close frame has its items redelivered.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from inference.eas.frames import decode_frame
from inference.eas.models import EasConsumer, EasItem, EasService
from inference.eas.queues import (
    SINK,
    queue_commit,
    queue_put,
    service_create,
    service_token_create,
)

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]
QUIET = 0.8  # how long "nothing more arrives" is watched for; no assertion depends on timing


@pytest.fixture
def service(personas) -> EasService:
    return service_create(name="sd_async", owner=personas["alice"])


@pytest.fixture
def token(service) -> str:
    return service_token_create(service=service)[1]


def _put(service: EasService, count: int, **tags: str) -> list[int]:
    return [queue_put(service=service, queue=SINK, data=f"result {i}".encode(), tags=tags).index for i in range(count)]


def _headers(token: str, uid: str = "u1", gid: str = "eas") -> list[tuple[bytes, bytes]]:
    """What the SDK sends on the handshake (reference §2.3, §4.2)."""
    return [
        (b"host", b"localhost:8000"),
        (b"origin", b"http://localhost:8000"),
        (b"authorization", token.encode()),
        (b"x-eas-queueservice-redis-uid", uid.encode()),
        (b"x-eas-queueservice-redis-gid", gid.encode()),
        (b"accept", b"application/vnd.google.protobuf"),
    ]


def _path(service: str = "sd_async", queue: str = "sink", **params: str) -> str:
    query = {"_watch_": "true", "_index_": "0", "_window_": "5", "_index_only_": "false", "_auto_commit_": "false"}
    query.update(params)
    suffix = f"/{queue}" if queue else ""
    return f"/api/predict/{service}{suffix}?" + "&".join(f"{k}={v}" for k, v in query.items())


async def _open(path: str, headers: Iterable[tuple[bytes, bytes]]) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, code = await communicator.connect(timeout=10)
    if not connected:  # refused at the handshake: the client goes, and the consumer ends
        await communicator.disconnect(code=code or 1000)
    return communicator, connected


async def _frames(communicator: WebsocketCommunicator, count: int) -> list[tuple[int, dict[str, str], bytes, str]]:
    """The next `count` messages, each checked to be one non-empty binary frame, decoded."""
    frames = []
    for _ in range(count):
        output = await communicator.receive_output(timeout=10)
        assert output["type"] == "websocket.send", output
        assert output.get("text") is None and output.get("bytes"), output
        frames.append(decode_frame(output["bytes"]))
    return frames


async def _nothing_more(communicator: WebsocketCommunicator) -> None:
    assert await communicator.receive_nothing(timeout=QUIET, interval=0.05)


def test_the_handshake_is_refused_without_the_services_token(service, token, personas):
    other = service_create(name="other.svc", owner=personas["bob"])
    others_token = service_token_create(service=other)[1]
    _put(service, 1)

    async def attempts() -> None:
        for what, path, headers in [
            ("no token", _path(), [h for h in _headers(token) if h[0] != b"authorization"]),
            ("wrong token", _path(), _headers("eas_wrong")),
            ("another service's token", _path(), _headers(others_token)),
            ("unknown service", _path(service="nope"), _headers(token)),
        ]:
            _communicator, connected = await _open(path, headers)
            assert not connected, what
        # The right token, raw (as the SDK sends it) or as a Bearer token.
        for authorization in (token, f"Bearer {token}"):
            headers = [h for h in _headers(token) if h[0] != b"authorization"] + [(b"authorization", authorization.encode())]
            communicator, connected = await _open(_path(), headers)
            assert connected
            await communicator.disconnect()

    async_to_sync(attempts)()


def test_a_services_token_cannot_watch_another_services_sink(service, token, personas):
    """Ownership: alice's service token reaches alice's service only. Nor do members' own API
    tokens (alice's included) open a sink: only a service token does. Nothing is claimed."""
    from tenants.services import token_create

    bobs = service_create(name="bobs.service", owner=personas["bob"])
    charlies = service_create(name="charlies", owner=personas["charlie"])
    _put(bobs, 2)
    _put(charlies, 2)
    member_tokens = {name: token_create(user=personas[name])[1] for name in ("alice", "bob", "charlie")}

    async def attempts() -> None:
        for target in ("bobs.service", "charlies"):
            for what, authorization in [
                ("alice's service token", token),
                ("alice's service token as Bearer", f"Bearer {token}"),
                *[(f"{name}'s member token", f"Bearer {raw}") for name, raw in member_tokens.items()],
            ]:
                headers = [h for h in _headers(token) if h[0] != b"authorization"]
                _communicator, connected = await _open(_path(service=target), [*headers, (b"authorization", authorization.encode())])
                assert not connected, (target, what)
        # A page on another site cannot open it either, even holding the token.
        cross_site = [h for h in _headers(token) if h[0] != b"origin"] + [(b"origin", b"https://evil.example")]
        _communicator, connected = await _open(_path(), cross_site)
        assert not connected

    async_to_sync(attempts)()
    assert not EasItem.objects.exclude(consumer="").exists()
    assert not EasConsumer.objects.exists()


@pytest.mark.parametrize(
    "params",
    [
        {"_window_": "0"},
        {"_window_": "-3"},
        {"_window_": "many"},
        {"_index_": "-2"},
        {"_index_": "x"},
        {"_index_": str(1 << 64)},
        {"_auto_commit_": "maybe"},
        {"_index_only_": "1"},
        {"_watch_": "false"},
    ],
)
def test_nonsense_parameters_refuse_the_handshake(service, token, params):
    async def attempt() -> None:
        _communicator, connected = await _open(_path(**params), _headers(token))
        assert not connected

    async_to_sync(attempt)()


def test_the_input_queue_cannot_be_watched(service, token):
    """The platform itself consumes the input queue (each item becomes a job)."""

    async def attempts() -> None:
        for queue in ("", "sdapi/v1/txt2img"):
            _communicator, connected = await _open(_path(queue=queue), _headers(token))
            assert not connected, queue

    async_to_sync(attempts)()


def test_frames_arrive_in_index_order_as_binary_data_frames(service, token):
    indexes = _put(service, 3, task_id="job_001")
    request_ids = list(EasItem.objects.filter(service=service, queue=SINK).order_by("index").values_list("request_id", flat=True))

    async def session() -> None:
        communicator, connected = await _open(_path(), _headers(token))
        assert connected
        frames = await _frames(communicator, 3)
        assert [frame[0] for frame in frames] == indexes
        for (index, tags, data, message), request_id, i in zip(frames, request_ids, range(3), strict=True):
            assert tags == {"task_id": "job_001", "requestId": request_id}
            assert (data, message) == (f"result {i}".encode(), "")
        await _nothing_more(communicator)
        # Items put while watching are pushed too.
        later = await database_sync_to_async(_put)(service, 1)
        assert [frame[0] for frame in await _frames(communicator, 1)] == later
        await communicator.disconnect()

    async_to_sync(session)()
    consumer = EasConsumer.objects.get(service=service, queue=SINK, name="eas.u1")
    assert (consumer.window, consumer.auto_commit, consumer.status) == (5, False, EasConsumer.Status.EXIT)


def test_a_full_window_holds_the_next_item_back_until_a_commit(service, token):
    indexes = _put(service, 3)

    async def session() -> None:
        communicator, connected = await _open(_path(_window_="2"), _headers(token))
        assert connected
        assert [frame[0] for frame in await _frames(communicator, 2)] == indexes[:2]
        await _nothing_more(communicator)
        await database_sync_to_async(queue_commit)(service=service, queue=SINK, indexes=[indexes[0]])
        assert [frame[0] for frame in await _frames(communicator, 1)] == indexes[2:]
        await _nothing_more(communicator)
        await communicator.disconnect()

    async_to_sync(session)()
    # Committed items are gone; the two uncommitted ones went back to the queue.
    assert list(EasItem.objects.filter(service=service, queue=SINK, consumer="").values_list("index", flat=True).order_by("index")) == indexes[1:]


def test_the_window_defaults_to_one(service, token):
    indexes = _put(service, 2)
    path = "/api/predict/sd_async/sink?_watch_=true"

    async def session() -> None:
        communicator, connected = await _open(path, _headers(token))
        assert connected
        assert [frame[0] for frame in await _frames(communicator, 1)] == indexes[:1]
        await _nothing_more(communicator)
        await communicator.disconnect()

    async_to_sync(session)()


def test_auto_commit_deletes_what_it_delivers(service, token):
    indexes = _put(service, 4)

    async def session() -> None:
        communicator, connected = await _open(_path(_window_="2", _auto_commit_="true"), _headers(token))
        assert connected
        assert [frame[0] for frame in await _frames(communicator, 4)] == indexes
        await communicator.disconnect()

    async_to_sync(session)()
    assert not EasItem.objects.filter(service=service, queue=SINK).exists()


def test_a_consumer_that_leaves_without_committing_has_its_items_redelivered(service, token):
    indexes = _put(service, 3)

    async def session() -> None:
        first, connected = await _open(_path(_window_="2"), _headers(token, uid="first"))
        assert connected
        assert [frame[0] for frame in await _frames(first, 2)] == indexes[:2]
        await first.disconnect(code=1006)  # gone without committing
        second, connected = await _open(_path(_window_="5"), _headers(token, uid="second"))
        assert connected
        assert [frame[0] for frame in await _frames(second, 3)] == indexes
        await second.disconnect()

    async_to_sync(session)()
    assert EasConsumer.objects.get(service=service, name="eas.first").status == EasConsumer.Status.EXIT


def test_two_consumers_of_one_group_split_the_items(service, token):
    indexes = _put(service, 4)

    async def session() -> None:
        one, connected = await _open(_path(_window_="2"), _headers(token, uid="one", gid="workers"))
        assert connected
        two, connected = await _open(_path(_window_="2"), _headers(token, uid="two", gid="workers"))
        assert connected
        got_one = [frame[0] for frame in await _frames(one, 2)]
        got_two = [frame[0] for frame in await _frames(two, 2)]
        assert got_one == sorted(got_one) and got_two == sorted(got_two)
        assert sorted(got_one + got_two) == indexes
        await _nothing_more(one)
        await _nothing_more(two)
        held = await database_sync_to_async(
            lambda: dict(EasItem.objects.filter(service=service, queue=SINK).values_list("index", "consumer"))
        )()
        assert held == {**dict.fromkeys(got_one, "workers.one"), **dict.fromkeys(got_two, "workers.two")}
        await one.disconnect()
        await two.disconnect()

    async_to_sync(session)()


def test_index_only_omits_the_data(service, token):
    indexes = _put(service, 2, task_id="t")

    async def session() -> None:
        communicator, connected = await _open(_path(_index_only_="true"), _headers(token))
        assert connected
        frames = await _frames(communicator, 2)
        assert [frame[0] for frame in frames] == indexes
        assert all(frame[2] == b"" and frame[1]["task_id"] == "t" for frame in frames)
        await communicator.disconnect()

    async_to_sync(session)()


def test_the_start_index_skips_older_items_and_minus_one_waits_for_new_ones(service, token):
    indexes = _put(service, 3)

    async def session() -> None:
        communicator, connected = await _open(_path(_index_=str(indexes[1])), _headers(token, uid="from2"))
        assert connected
        assert [frame[0] for frame in await _frames(communicator, 2)] == indexes[1:]
        await communicator.disconnect()
        communicator, connected = await _open(_path(_index_="-1"), _headers(token, uid="new"))
        assert connected
        await _nothing_more(communicator)
        later = await database_sync_to_async(_put)(service, 1)
        assert [frame[0] for frame in await _frames(communicator, 1)] == later
        await communicator.disconnect()

    async_to_sync(session)()


# --- the deployed server ----------------------------------------------------------------------


def _manage(env: dict[str, str], code: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], check=False, cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # the last line: the shell may announce its imports first


SETUP = """
from inference.eas.queues import SINK, queue_put, service_create, service_token_create
from tenants.models import Membership
from tenants.services import member_create, tenant_create
alice = member_create(tenant=tenant_create(slug="studio-a"), username="alice", password="pw", role=Membership.Role.ADMIN)
service = service_create(name="sd_async", owner=alice)
for i in range(3):
    queue_put(service=service, queue=SINK, data=b"result", tags={"task_id": str(i)})
print(service_token_create(service=service)[1])
"""

HELD = """
from inference.eas.models import EasItem
print(sorted(EasItem.objects.filter(consumer="eas.dropper").values_list("index", flat=True)))
"""


@pytest.fixture(scope="module")
def daphne():
    """The web server as deployed (`web_command`), on a SQLite database of its own."""
    from inference.processes import web_command
    from tests.harness import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="atelier-eas-watch-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
               ATELIER_WORKSPACE_SPARES="0")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True,
                   timeout=300)
    token = _manage(env, SETUP)
    port = free_port()
    log = data_dir / "web.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(web_command("127.0.0.1", port), cwd=REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield port, token, env, log
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.django_db(transaction=False)
def test_the_server_answers_pings_and_redelivers_after_a_tcp_abort(daphne):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port, token, env, log = daphne
    url = f"ws://127.0.0.1:{port}/api/predict/sd_async/sink?_watch_=true&_index_=0&_window_=2&_index_only_=false&_auto_commit_=false"
    identity = {"X-EAS-QueueService-Redis-Uid": "dropper", "X-EAS-QueueService-Redis-Gid": "eas"}

    # A wrong token: the handshake itself is refused (the SDK raises WebSocketBadStatusException).
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=f"http://127.0.0.1:{port}", additional_headers={"Authorization": "eas_wrong", **identity},
                open_timeout=20)
    assert refused.value.response.status_code == 403

    # As the SDK does: Origin = its own host, the raw token, pings with b"ping".
    websocket = connect(url, origin=f"http://127.0.0.1:{port}", additional_headers={"Authorization": token, **identity},
                        open_timeout=20, ping_interval=None)
    frames = [decode_frame(websocket.recv(timeout=20)) for _ in range(2)]
    assert [frame[0] for frame in frames] == [1, 2]
    for _ in range(3):
        assert websocket.ping(b"ping").wait(timeout=20)
    assert _manage(env, HELD) == "[1, 2]"

    # Watcher.close(): a TCP shutdown without a close frame. The items go back to the queue.
    websocket.socket.shutdown(socket.SHUT_RDWR)
    websocket.socket.close()
    deadline = time.monotonic() + 30
    while _manage(env, HELD) != "[]":
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)

    with connect(url, origin=f"http://127.0.0.1:{port}", additional_headers={"Authorization": token, **identity},
                 open_timeout=20) as again:
        assert [decode_frame(again.recv(timeout=20))[0] for _ in range(2)] == [1, 2]
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
