"""Job events relayed from a worker process to the web process (`inference/events.py`, the
embedded default's `http` transport): in order, over one kept-alive connection, signed, and a
job's final event sent before `job_event_publish` returns; in cluster mode the same on Redis."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import override_settings

from inference.events import SIGNATURE_HEADER, event_relay, job_event_publish, verify
from inference.models import Job


@contextmanager
def web_process_stand_in() -> Iterator[tuple[str, list[dict]]]:
    """A loopback HTTP/1.1 server that records each event POSTed to it (and the client's port)."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps the connection open between requests

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({**json.loads(body), "signed": verify(body, self.headers.get(SIGNATURE_HEADER, "")),
                             "client_port": self.client_address[1]})
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/internal/events", received
    finally:
        server.shutdown()
        server.server_close()


def _job(status: str, step: int = 0) -> Job:
    return Job(public_id="relayed-job", kind=Job.Kind.TXT2IMG, status=status, step=step, total_steps=2)


def test_events_arrive_in_order_signed_over_one_connection_and_the_final_one_before_publish_returns() -> None:
    with web_process_stand_in() as (url, received), override_settings(ATELIER_EVENT_TRANSPORT="http", ATELIER_EVENTS_URL=url):
        job_event_publish(_job("running"))  # the claim: queued, the worker goes on at once
        job_event_publish(_job("running", step=1))
        job_event_publish(_job("succeeded", step=2))  # final: waited for
        assert [(event["event"]["status"], event["event"]["step"]) for event in received] == [
            ("running", 0), ("running", 1), ("succeeded", 2)
        ]
        assert all(event["signed"] and event["group"] == "job.relayed-job" for event in received)
        assert len({event["client_port"] for event in received}) == 1  # one kept-alive connection


def test_a_connection_the_server_closed_is_made_again() -> None:
    with web_process_stand_in() as (url, received):
        relay = event_relay(url)
        relay.publish(json.dumps({"group": "job.a", "event": {"status": "running"}}).encode(), wait=True)
        relay._connection.sock.shutdown(socket.SHUT_RDWR)  # as the server's idle timeout would
        relay.publish(json.dumps({"group": "job.a", "event": {"status": "succeeded"}}).encode(), wait=True)
        assert [event["event"]["status"] for event in received] == ["running", "succeeded"]


def test_a_web_process_that_is_gone_fails_no_job() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/internal/events"  # nobody listens there
    with override_settings(ATELIER_EVENT_TRANSPORT="http", ATELIER_EVENTS_URL=url):
        job_event_publish(_job("running"))
        job_event_publish(_job("failed"))  # logged, not raised
    event_relay(url).flush()



@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the Redis channel layer: cluster mode")
def test_on_redis_events_are_sent_in_order_from_the_relay_and_the_final_one_before_publish_returns() -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("job.relayed-job", channel)
    try:
        with override_settings(ATELIER_EVENT_TRANSPORT="channel_layer"):
            job_event_publish(_job("running"))  # queued: the caller goes on at once
            job_event_publish(_job("succeeded", step=2))  # final: sent when this returns

        async def two() -> list[dict]:
            return [await asyncio.wait_for(layer.receive(channel), 30) for _ in range(2)]

        received = async_to_sync(two)()
        assert [message["event"]["status"] for message in received] == ["running", "succeeded"]
    finally:
        async_to_sync(layer.group_discard)("job.relayed-job", channel)
