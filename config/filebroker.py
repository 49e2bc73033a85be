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

`register()` makes the transport known to kombu as `atelier-files://`; `config/celery.py` calls
it before any connection is made, in every process that uses the Celery app.
"""

from __future__ import annotations

import os
import time
import uuid

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "atelier-files"


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


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    """Name this transport `atelier-files` for broker URLs (idempotent)."""
    TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
