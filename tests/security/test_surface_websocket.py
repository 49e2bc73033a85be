"""Every websocket route of `config.asgi.application`, through the real ASGI stack (origin check,
session and auth middleware, the Channels router, the consumer) and the real database.

The database is transactional: Channels runs the consumer's queries through
`database_sync_to_async`, which closes connections left in a transaction.

Each test runs its sockets in one event loop of its own (`_in_loop`): every socket is disconnected
as daphne does when the client goes, so no consumer is left for the loop's shutdown to cancel, and
the whole run is bounded, so a socket that never answers fails the test in seconds, naming it.
Each test also gets a channel layer of its own (tests/conftest.py, `fresh_channel_layer`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from config.asgi import application
from inference.events import job_group
from tests.security.conftest import AlicesThings
from tests.security.surface import Access, Route, concrete_path, entry_for, enumerate_routes

pytestmark = pytest.mark.django_db(transaction=True)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
RUN_SECONDS = 60  # a whole test's sockets; each answers in well under a second


def _in_loop(attempts: Callable[[], Awaitable[None]]) -> None:
    """Run `attempts()` in an event loop of its own, failing after RUN_SECONDS."""

    async def bounded() -> None:
        try:
            await asyncio.wait_for(attempts(), timeout=RUN_SECONDS)
        except TimeoutError:
            pytest.fail(f"the sockets did not answer within {RUN_SECONDS} s")

    async_to_sync(bounded)()


def _owner_scoped_sockets() -> list:
    routes = [r for r in enumerate_routes() if r.protocol == "websocket"]
    return [pytest.param(r, id=r.pattern) for r in routes if entry_for(r).access is Access.OWNER_SCOPED]


async def _open(path: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> tuple[WebsocketCommunicator, bool, int | None]:
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, code = await communicator.connect(timeout=10)
    if not connected:  # refused at the handshake: the client goes, and the consumer ends
        await communicator.disconnect(code=code or 1000)
    return communicator, connected, code


async def _until_closed(communicator: WebsocketCommunicator) -> tuple[list[dict], int | None]:
    """Every message the server sends, and its close code; then the client goes, as daphne tells
    the consumer when the socket closes, and the consumer ends."""
    messages = []
    while True:
        output = await communicator.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            await communicator.disconnect(code=output.get("code") or 1000)
            return messages, output.get("code")
        messages.append(json.loads(output["text"]))


def _session_cookie(user) -> tuple[bytes, bytes]:
    """A cookie header with a session of `user` of its own (one client per user: signing in
    another user on the same client would end the first one's session)."""
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}".encode()


def _path(route: Route, things: AlicesThings) -> str:
    return concrete_path(route.pattern, things.values)


@pytest.mark.parametrize("route", _owner_scoped_sockets())
def test_anonymous_job_sockets_are_closed_unauthenticated(alices_things, route: Route) -> None:
    path = _path(route, alices_things)

    async def attempts() -> None:
        for query, headers in [("", []), ("?token=atl_wrong", []), ("", [(b"authorization", b"Bearer atl_wrong")])]:
            communicator, connected, code = await _open(path + query, headers)
            if connected:
                messages, code = await _until_closed(communicator)
                assert messages == [], (query, headers, messages)
            assert code == CLOSE_UNAUTHENTICATED, (query, headers, code)

    _in_loop(attempts)


async def _group_members(layer, group: str) -> list:
    """The channels in a group, on the in-memory layer (embedded default) or on Redis."""
    if hasattr(layer, "groups"):
        return list(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    return await connection.zrange(layer._group_key(group), 0, -1)


@pytest.mark.parametrize("route", _owner_scoped_sockets())
def test_outsiders_cannot_subscribe_to_alices_job_events(all_tokens, outsiders, alices_things, route: Route) -> None:
    """bob, charlie and dana, by token header, token query and session cookie: closed 4404 before
    any message, never added to the job's group, and so never sent the job's events."""
    path = _path(route, alices_things)
    credentials = []
    for name, user in outsiders.items():
        token = all_tokens[name]
        credentials += [
            (f"{name} header", "", [(b"authorization", f"Bearer {token}".encode())]),
            (f"{name} query", f"?token={token}", []),
            (f"{name} session", "", [_session_cookie(user)]),
        ]

    async def attempts() -> None:
        layer = get_channel_layer()
        for what, query, headers in credentials:
            communicator, connected, code = await _open(path + query, headers)
            if connected:
                messages, code = await _until_closed(communicator)
                assert messages == [], (what, messages)
            assert code == CLOSE_NOT_FOUND, (what, code)
            assert not await _group_members(layer, job_group(alices_things.job_id)), f"{what} joined alice's job group"

    _in_loop(attempts)


@pytest.mark.parametrize("route", _owner_scoped_sockets())
def test_cross_site_browser_sockets_are_refused(personas, alices_things, route: Route) -> None:
    """A page on another site cannot open alice's socket with her cookie (CSWSH); her own site can."""
    path = _path(route, alices_things)
    cookie = _session_cookie(personas["alice"])

    async def attempts() -> None:
        communicator, connected, _ = await _open(path, [cookie, (b"host", b"localhost"), (b"origin", b"https://evil.example")])
        assert not connected
        # Same host, another port: another site.
        communicator, connected, _ = await _open(path, [cookie, (b"host", b"localhost"), (b"origin", b"http://localhost:1")])
        assert not connected
        communicator, connected, _ = await _open(path, [cookie, (b"host", b"localhost"), (b"origin", b"http://localhost")])
        assert connected
        snapshot = await communicator.receive_json_from(timeout=10)
        assert snapshot["id"] == alices_things.job_id
        await communicator.disconnect()

    _in_loop(attempts)


@pytest.mark.parametrize("route", _owner_scoped_sockets())
def test_the_owner_gets_her_jobs_events(tokens, alices_things, route: Route) -> None:
    """The positive control: alice's token opens the socket, she gets the state, then the events,
    and the socket closes after the final one."""
    path = _path(route, alices_things)

    async def session() -> None:
        communicator, connected, _ = await _open(path, [(b"authorization", f"Bearer {tokens['alice']}".encode())])
        assert connected
        snapshot = await communicator.receive_json_from(timeout=10)
        assert (snapshot["id"], snapshot["status"]) == (alices_things.job_id, "queued")
        event = {"type": "job", "id": alices_things.job_id, "status": "succeeded", "progress": 1.0}
        await get_channel_layer().group_send(job_group(alices_things.job_id), {"type": "job.event", "event": event})
        messages, code = await _until_closed(communicator)
        assert messages == [event] and code in (None, 1000)

    _in_loop(session)
