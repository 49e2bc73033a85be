"""The web server: daphne, with timeouts for requests that never finish arriving.

Daphne has no option for that: its ``--http-timeout`` bounds a whole response, which would
cut Gradio's long event streams. The HTTP layer underneath (twisted's ``HTTPChannel``) has an
idle timeout that it lifts once a request has fully arrived, so a response can take as long as
it needs. This module sets that idle timeout from ``ATELIER_HTTP_IDLE_TIMEOUT_SECONDS`` and
adds a deadline for the request line and headers, ``ATELIER_HTTP_HEADER_TIMEOUT_SECONDS``,
counted from their first byte, so a client trickling a byte at a time cannot hold a
connection forever either.

It also leaves request bodies to Django: twisted parses a POST's form body into arguments
daphne never reads, and answers a malformed ``multipart/form-data`` body with a bare 400 and a
dropped connection before the application sees it. With that parse off, the APIs answer such a
request like any other body they cannot read, with a message that says what to send.

Once the server runs, it calls the application's ``server_started()`` (if it has one) on the
event loop: the platform's app boots the first spare workspace process then, so the first
member to open ``/ui/`` finds one already importing Gradio (daphne speaks no ASGI lifespan).
Run as ``python -m config.webserver <daphne arguments>``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from daphne import server as daphne_server
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.web import http


class HeaderDeadlineChannel(http.HTTPChannel):
    """An HTTP/1.1 channel that drops a client whose request head is not complete in time."""

    def __init__(self, header_timeout: float) -> None:
        super().__init__()
        self.header_timeout = header_timeout
        self._awaiting_head = True
        self._head_deadline: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._awaiting_head and self._head_deadline is None:
            self._head_deadline = self.callLater(self.header_timeout, self._head_too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        self._cancel_head_deadline()
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        self._awaiting_head = True  # the next request on this keep-alive connection
        super().requestDone(request)

    def connectionLost(self, reason: Any) -> None:
        self._cancel_head_deadline()
        super().connectionLost(reason)

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        self.timeoutConnection()  # twisted's own: close, and abort if the client hangs on

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None


class WholeBodyRequest(WebRequest):
    """Daphne's request, without twisted's own parse of form bodies (Django parses them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsePOSTFormSubmission = False  # twisted's switch (an instance attribute it sets itself)


class AtelierHTTPFactory(HTTPFactory):
    """Daphne's HTTP factory with the idle timeout and the header deadline from settings."""

    def __init__(self, server: Any) -> None:
        from django.conf import settings

        super().__init__(server)
        self.timeOut = settings.ATELIER_HTTP_IDLE_TIMEOUT_SECONDS
        self.header_timeout = settings.ATELIER_HTTP_HEADER_TIMEOUT_SECONDS

    def buildProtocol(self, addr: Any) -> http._GenericHTTPChannelProtocol:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = WholeBodyRequest
        return protocol

    def protocol(self) -> http._GenericHTTPChannelProtocol:  # twisted calls self.protocol()
        return http._GenericHTTPChannelProtocol(HeaderDeadlineChannel(self.header_timeout))


class AtelierServer(daphne_server.Server):
    """Daphne's server, telling the application when it has started serving."""

    def run(self) -> None:
        # Before the reactor runs, so this is queued on its asyncio loop: it runs once the loop does.
        daphne_server.reactor.callLater(0, self._application_started)
        super().run()

    def _application_started(self) -> None:
        started = getattr(self.application, "server_started", None)
        if callable(started):
            started()


class AtelierCommandLine(CommandLineInterface):
    server_class = AtelierServer


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup(set_prefix=False)
    # daphne's Server builds `HTTPFactory(self)` by that module-level name and has no hook.
    daphne_server.HTTPFactory = AtelierHTTPFactory
    AtelierCommandLine().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
