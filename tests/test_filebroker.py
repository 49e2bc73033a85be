"""The embedded default's broker (`config/filebroker.py`): a consumer never reads half a message.

The consumer is kombu's own polling `_get`, run at the worst moment: while the producer is
between creating its message file and writing it. kombu's `filesystem` transport loses the
message there (the consumer takes the empty file and cannot parse it); ours shows nothing
until the whole message is in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from config import filebroker


def _connection(folder: Path, transport: str) -> Connection:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder / "control")}
    return Connection(f"{transport}://", transport_options=options)


def _poll_during_the_write(channel, module, monkeypatch: pytest.MonkeyPatch) -> list:
    """Publish one message; while its file exists but is not yet written, poll as the worker does."""
    seen: list = []
    real = module.str_to_bytes

    def encode_then_poll(text: str) -> bytes:
        try:
            seen.append(channel._get("jobs"))
        except Exception as exc:  # noqa: BLE001 - what the poll met is the result
            seen.append(exc)
        return real(text)

    monkeypatch.setattr(module, "str_to_bytes", encode_then_poll)
    channel._put("jobs", {"body": "the whole message"})
    monkeypatch.setattr(module, "str_to_bytes", real)
    return seen


def test_a_poll_during_a_write_sees_nothing_and_the_message_then_arrives_whole(tmp_path, monkeypatch) -> None:
    filebroker.register()
    with _connection(tmp_path, filebroker.SCHEME) as connection:
        channel = connection.default_channel
        [seen] = _poll_during_the_write(channel, filebroker, monkeypatch)
        assert isinstance(seen, Empty)  # no file yet: the consumer found nothing to take
        assert channel._get("jobs") == {"body": "the whole message"}
        assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.msg"))


def test_kombus_own_transport_loses_the_message_a_poll_meets_mid_write(tmp_path, monkeypatch) -> None:
    """Why ours exists: the same poll against kombu's `filesystem` transport takes the empty file."""
    with _connection(tmp_path, "filesystem") as connection:
        channel = connection.default_channel
        [seen] = _poll_during_the_write(channel, filesystem, monkeypatch)
        assert isinstance(seen, json.JSONDecodeError)
        with pytest.raises(Empty):
            channel._get("jobs")  # the message is gone


def test_messages_round_trip_in_order_through_a_kombu_queue(tmp_path) -> None:
    filebroker.register()
    with _connection(tmp_path, filebroker.SCHEME) as connection:
        queue = connection.SimpleQueue("atelier.test")
        for number in range(5):
            queue.put({"number": number})
        received = []
        for _ in range(5):
            message = queue.get(timeout=5)
            received.append(message.payload["number"])
            message.ack()
        assert received == [0, 1, 2, 3, 4]
        queue.close()
