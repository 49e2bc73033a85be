"""`/ws/jobs/<id>`: a websocket that streams one job's events to those allowed to see it.

Authentication: the browser session cookie, or an API token in the `Authorization` header
(any form `tenants.auth` accepts) or in the `token` query parameter for clients that cannot
set headers. The socket sends the job's current state first, then every event, and closes
after the final one. Unknown job or someone else's: closed with code 4404; no credentials: 4401.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from inference.events import job_event_payload, job_group
from inference.models import Job
from inference.selectors import job_get_for_user
from tenants.auth import user_from_authorization

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
FINISHED = {status.value for status in Job.FINISHED}


@database_sync_to_async
def _authenticate(scope):
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization:
        return user_from_authorization(authorization)
    token = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
    if token:
        return user_from_authorization(f"Bearer {token}")
    user = scope.get("user")
    return user if user is not None and user.is_authenticated else None


@database_sync_to_async
def _snapshot(user, public_id: str):
    job = job_get_for_user(user, public_id)
    return job_event_payload(job) if job else None


class JobEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = None
        await self.accept()
        user = await _authenticate(self.scope)
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        public_id = self.scope["url_route"]["kwargs"]["public_id"]
        if await _snapshot(user, public_id) is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Subscribe, then read the state again, so no event falls between the two.
        self.group = job_group(public_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await _snapshot(user, public_id)
        await self.send_json(snapshot)
        if snapshot["status"] in FINISHED:
            await self.close()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_event(self, message) -> None:
        event = message["event"]
        await self.send_json(event)
        if event.get("status") in FINISHED:
            await self.close()

    async def receive_json(self, content, **kwargs) -> None:
        pass  # the socket is one-way; cancel with POST /api/v1/jobs/<id>/cancel
