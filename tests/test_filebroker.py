"""The embedded default's broker (`config/filebroker.py`): a consumer never reads half a message.

And an idle consumer is woken by a put instead of sleeping out its poll interval.

The consumer is kombu's own polling `_get`, run at the worst moment: while the producer is
between creating its message file and writing it. kombu's `filesystem` transport loses the
message there (the consumer takes the empty file and cannot parse it); ours shows nothing
until the whole message is in place.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from config import filebroker


def _connection(folder: Path, transport: str, **extra) -> Connection:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder / "control"),
               **extra}
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


def test_a_waiting_consumer_is_woken_by_a_put_instead_of_sleeping_out_its_poll_interval(tmp_path) -> None:
    """With an hour between polls, only the wake-up can deliver the message within the get's minute."""
    filebroker.register()
    received: list = []
    with _connection(tmp_path, filebroker.SCHEME, polling_interval=3600) as consumer_side, \
            _connection(tmp_path, filebroker.SCHEME) as producer_side:
        queue = consumer_side.SimpleQueue("atelier.wake")
        getter = threading.Thread(target=lambda: received.append(queue.get(timeout=60)), daemon=True)
        getter.start()
        deadline = time.monotonic() + 60  # a bound on waiting for the consumer to start waiting, not a timing
        while not list((tmp_path / filebroker.WAKE_FOLDER).glob(f"*{filebroker.WAKE_SUFFIX}")):
            assert time.monotonic() < deadline, "the consumer never waited on a wake-up socket"
            time.sleep(0.01)
        producer_side.SimpleQueue("atelier.wake").put({"number": 7})
        getter.join(timeout=60)
        assert not getter.is_alive() and received, "the put did not wake the consumer"
        assert received[0].payload == {"number": 7}
        received[0].ack()
        queue.close()
    # closing the consumer's connection removes its socket
    assert not list((tmp_path / filebroker.WAKE_FOLDER).glob(f"*{filebroker.WAKE_SUFFIX}"))


def test_a_producer_removes_the_socket_of_a_consumer_that_is_gone(tmp_path) -> None:
    wake_folder = tmp_path / filebroker.WAKE_FOLDER
    wake_folder.mkdir()
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gone.bind(str(wake_folder / f"1-gone{filebroker.WAKE_SUFFIX}"))
    gone.close()  # its consumer exited without cleaning up
    alive = filebroker.WakeSocket(str(tmp_path))
    try:
        assert filebroker.wake_consumers(str(tmp_path)) == 1
        assert [path.name for path in wake_folder.iterdir()] == [Path(alive.path).name]
        alive.wait(60)  # returns at once: the wake-up is waiting in its socket
    finally:
        alive.close()


def test_a_folder_without_consumers_is_no_error(tmp_path) -> None:
    assert filebroker.wake_consumers(str(tmp_path)) == 0


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the short socket names go through /proc (Linux)")
def test_a_broker_folder_deeper_than_a_socket_path_still_wakes_its_consumers(tmp_path: Path) -> None:
    folder = tmp_path / ("deep-" * 30)  # far over the 108 bytes a Unix socket's path may have
    folder.mkdir()
    consumer = filebroker.WakeSocket(str(folder))
    try:
        assert len(str(folder)) > filebroker.MAX_SOCKET_PATH
        assert filebroker.wake_consumers(str(folder)) == 1
        readable, _, _ = select.select([consumer.socket], [], [], 5.0)
        assert readable == [consumer.socket]  # the wake-up reached its socket
    finally:
        consumer.close()
    assert not list((folder / filebroker.WAKE_FOLDER).iterdir())  # its socket is removed
