"""The middleware chain under ASGI runs in the request's one thread (`config/middleware.py`).

Requests go through Django's real ASGI handler in-process, with the project's `MIDDLEWARE`,
against the real API views. What is counted is what the change is about: the hops between the
event loop and a thread (`asgiref`'s `SyncToAsync` calls) one request makes. Before
`SyncChainMiddleware` an API poll made 15 of them (16 for `/sdapi/v1/progress`); now 5 (6: its
async adapter authenticates in a hop of its own). The middlewares still act on the request
and the response (their headers are there; an unauthenticated call is still refused).
"""

from __future__ import annotations

import threading

import httpx
import pytest
from asgiref.sync import SyncToAsync, async_to_sync
from django.core.asgi import get_asgi_application

pytestmark = pytest.mark.django_db(transaction=True)  # the request's thread reads what the test wrote


@pytest.fixture
def hops(monkeypatch) -> list[int]:
    """The thread each `sync_to_async` call of the request ran its function in, in order."""
    seen: list[int] = []
    original = SyncToAsync.thread_handler

    def recording(self, loop, exc_info, task_context, func, *args, **kwargs):  # runs in the target thread
        seen.append(threading.get_ident())
        return original(self, loop, exc_info, task_context, func, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "thread_handler", recording)
    return seen


def _get(path: str, token: str | None) -> httpx.Response:
    app = get_asgi_application()
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            return await client.get(path, headers=headers)

    return async_to_sync(call)()


def test_an_api_poll_runs_its_middlewares_and_view_in_one_thread(settings, personas, tokens, hops,
                                                                  tiny_checkpoint_path) -> None:
    from a1111.generation import parse_generation_request
    from inference.services import job_submit

    settings.ALLOWED_HOSTS = ["testserver"]
    job = job_submit(user=personas["alice"], request=parse_generation_request({"prompt": "x", "steps": 2}))
    hops.clear()
    response = _get(f"/api/v1/jobs/{job.public_id}", tokens["alice"])
    assert response.status_code == 200, response.text
    assert response.json()["id"] == job.public_id
    # the middlewares ran: their headers are on the answer
    assert "Content-Security-Policy" in response.headers and response.headers["X-Frame-Options"] == "DENY"
    assert len(hops) <= 5, hops
    assert len(set(hops)) == 1  # every sync part of the request ran in its one thread

    hops.clear()
    response = _get("/sdapi/v1/progress", tokens["alice"])  # an async adapter over a sync view
    assert response.status_code == 200 and response.json()["state"]["job_count"] == 1
    assert len(hops) <= 6 and len(set(hops)) == 1, hops

    assert _get(f"/api/v1/jobs/{job.public_id}", None).status_code == 401
    assert _get(f"/api/v1/jobs/{job.public_id}", tokens["charlie"]).status_code == 404
