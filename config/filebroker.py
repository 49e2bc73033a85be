"""The embedded default's broker: kombu's file-system transport, with messages written atomically.

kombu's `filesystem` transport creates a message file, then locks it and writes the payload.
Its consumer does not take that lock: it lists the folder every poll, moves each message file
away and parses what it reads. A poll that lands between the file's creation and the end of
its write reads an empty or partial payload: the message is gone from the folder and its JSON
does not parse, so a dispatched job never reaches the worker (CI saw an Extras job wait for
its 120 s timeout this way, on a busy 2-core machine).

Here a message is written to a temporary name the consumer never picks up (no `.msg` ending)
in the same folder and renamed into place: a rename is atomic on one file system, so the
consumer sees either no file or the whole message. Names also sort first in, first out.

Delivery is pushed, not only polled. kombu's consumer lists the folder, and when it finds nothing
sleeps `polling_interval` (50 ms here) before looking again: on average half of that was added to
every job between its dispatch and its worker (measured with `bench/e2e_overhead.py`). Here an idle
consumer waits on a Unix datagram socket of its own in the folder's `.wake/` instead of sleeping,
for at most the same interval; a producer that has renamed a message into place sends one byte to
every socket there. The poll stays as it was underneath (a wake-up that is lost, or a consumer on
a system without Unix sockets, costs at most one interval, as before), and no message goes through
the socket: it only ends the wait early. A socket whose consumer has gone is removed by the next
producer that finds it refusing.

`register()` makes the transport known to kombu as `atelier-files://`; `config/celery.py` calls
it before any connection is made, in every process that uses the Celery app.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
import uuid
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "atelier-files"
WAKE_FOLDER = ".wake"  # the consumers' wake-up sockets, inside the message folder
WAKE_SUFFIX = ".sock"
# A Unix socket's path must fit `sockaddr_un.sun_path` (108 bytes on Linux, 104 on macOS). A deep
# broker folder (a long DATA_DIR) would not, so on Linux each socket is named through the wake-up
# folder's open descriptor, `/proc/self/fd/<n>/<name>`, which is short whatever the folder's path.
MAX_SOCKET_PATH = 100
_PROC_FD = "/proc/self/fd"


class _WakeFolder:
    """The `.wake/` folder of a broker folder, open: socket addresses for its entries that fit."""

    def __init__(self, folder: str, *, create: bool) -> None:
        self.path = os.path.join(folder, WAKE_FOLDER)
        if create:
            os.makedirs(self.path, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        self.short = os.path.isdir(_PROC_FD)

    def address(self, name: str) -> str:
        address = f"{_PROC_FD}/{self.fd}/{name}" if self.short else os.path.join(self.path, name)
        if len(os.fsencode(address)) > MAX_SOCKET_PATH:
            raise OSError(errno.ENAMETOOLONG, "the broker folder's path is too long for a Unix socket", address)
        return address

    def names(self) -> list[str]:
        return [name for name in os.listdir(self.fd) if name.endswith(WAKE_SUFFIX)]

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def wake_consumers(folder: str) -> int:
    """Tell every consumer waiting on `folder` that a message is there; how many were told.

    Best effort and never blocking: a consumer that was not told still finds the message at its
    next poll. A socket nobody listens on any more (its consumer exited) is removed."""
    try:
        wake_folder = _WakeFolder(folder, create=False)
    except OSError:
        return 0
    told = 0
    try:
        names = wake_folder.names()
        if not names:
            return 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for name in names:
                try:
                    sender.sendto(b"\0", wake_folder.address(name))
                    told += 1
                except BlockingIOError:
                    told += 1  # its queue of wake-ups is full: it is awake already
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                        wake_folder.unlink(name)  # its consumer is gone
    finally:
        wake_folder.close()
    return told


class WakeSocket:
    """A consumer's wake-up socket: `wait(seconds)` returns when a producer wrote, or after `seconds`."""

    def __init__(self, folder: str) -> None:
        self.folder = _WakeFolder(folder, create=True)  # kept open: the socket's name goes through it
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}{WAKE_SUFFIX}"
        self.path = os.path.join(self.folder.path, self.name)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.socket.bind(self.folder.address(self.name))
        except OSError:
            self.socket.close()
            self.folder.close()
            raise
        self.socket.setblocking(False)

    def wait(self, seconds: float) -> None:
        readable, _, _ = select.select([self.socket], [], [], seconds)
        if readable:
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self.socket.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return

    def close(self) -> None:
        self.socket.close()
        self.folder.unlink(self.name)
        self.folder.close()


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs) -> None:
        """Put a message on `queue`: written under a temporary name, then renamed into place."""
        # The consumer takes a queue's files in name order: a zero-padded nanosecond clock shared by
        # every process on the machine keeps that first in, first out (kombu's milliseconds do not).
        name = f"{time.monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb", buffering=0) as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc
        wake_consumers(self.data_folder_out)


class Transport(filesystem.Transport):
    Channel = Channel
    _wake: WakeSocket | None = None
    _wake_failed = False

    def _wake_socket(self) -> WakeSocket | None:
        """This consumer's socket, made on its first wait (producers never wait, so never make one)."""
        if self._wake is None and not self._wake_failed:
            folder = self.client.transport_options.get("data_folder_in", "data_in")
            try:
                self._wake = WakeSocket(folder)
            except (OSError, AttributeError):  # no AF_UNIX, a path too long, …: poll as kombu does
                self._wake_failed = True
        return self._wake

    def drain_events(self, connection, timeout: float | None = None) -> None:
        """kombu's `virtual.Transport.drain_events`, with the sleep between polls replaced by a
        wait on this consumer's wake-up socket (which a producer ends early)."""
        started = time.monotonic()
        polling_interval = self.polling_interval
        if timeout and polling_interval and polling_interval > timeout:
            polling_interval = timeout
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise socket.timeout() from None
                if polling_interval is not None:
                    wake = self._wake_socket()
                    if wake is None:
                        time.sleep(polling_interval)
                    else:
                        wake.wait(polling_interval)
            else:
                return

    def close_connection(self, connection) -> None:
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        super().close_connection(connection)


def register() -> None:
    """Name this transport `atelier-files` for broker URLs (idempotent)."""
    TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
