"""A client of `/api/v1/uploads` for the tests: start, send chunks, read, cancel (with a token)."""

from __future__ import annotations

import hashlib
import json

from django.test import Client


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Uploader:
    """`Uploader(client, token)`: the Django test client with `Authorization: Bearer <token>`."""

    def __init__(self, client: Client, token: str | None) -> None:
        self.client = client
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def start(self, path: str, data: bytes, *, area: str = "home", **overrides):
        body = {"area": area, "path": path, "size": len(data), "sha256": sha(data), **overrides}
        return self.client.post("/api/v1/uploads", data=json.dumps(body), content_type="application/json",
                                **self.headers)

    def put(self, upload_id: str, chunk: bytes, first: int, total: int, *, last: int | None = None):
        last = first + len(chunk) - 1 if last is None else last
        return self.client.generic("PUT", f"/api/v1/uploads/{upload_id}", data=chunk,
                                   content_type="application/octet-stream",
                                   HTTP_CONTENT_RANGE=f"bytes {first}-{last}/{total}", **self.headers)

    def get(self, upload_id: str):
        return self.client.get(f"/api/v1/uploads/{upload_id}", **self.headers)

    def delete(self, upload_id: str):
        return self.client.generic("DELETE", f"/api/v1/uploads/{upload_id}", **self.headers)

    def send(self, upload_id: str, data: bytes, chunk_size: int, *, start_at: int = 0):
        """Every chunk from `start_at`; the last answer."""
        response = None
        for first in range(start_at, len(data), chunk_size):
            response = self.put(upload_id, data[first:first + chunk_size], first, len(data))
            assert response.status_code == 200 or first + chunk_size >= len(data), response.content
        return response

    def upload(self, path: str, data: bytes, chunk_size: int, *, area: str = "home"):
        """Start and send the whole file; the last answer (the start's when it was refused)."""
        started = self.start(path, data, area=area)
        if started.status_code != 201:
            return started
        return self.send(started.json()["id"], data, chunk_size)
