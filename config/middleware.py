"""How the middleware chain runs under daphne: in the request's one thread, not hopping.

Django adapts each middleware to the mode of the handler below it (`BaseHandler.load_middleware`).
Under ASGI the innermost handler is async, so every middleware that can run async does:
Django's own (`MiddlewareMixin`: sessions, CSRF, auth, messages, …) then call each of their
`process_request` / `process_response` through `sync_to_async`, a hop from the event loop to
the request's thread and back. With our three sync-only middlewares at the top of the chain
that was 15 hops per API request (16 for `/sdapi/v1/progress`), each a wake-up of another
thread; on a loaded machine each wake-up waits for a CPU, and a poll's latency was mostly those
waits (`bench/api_load.py`, docs/PERFORMANCE.md "The sync APIs at load").

`SyncChainMiddleware`, last in `MIDDLEWARE`, is sync-only and does nothing: the handler below
it is adapted once (`async_to_sync`), and every middleware above it runs synchronously in the
request's thread. A request now makes 5 hops: into the thread, back to the loop for the view
(an async view is awaited there, as before), the request_started / request_finished signals and
CSRF's `process_view`.

Nothing else changes: the request already held its thread for its whole life, an async view's
wait included (the sync-only `ProbeMiddleware` at the top of the chain saw to that), and
thread-sensitive sync code still runs in that same thread.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncChainMiddleware:
    """Sync-only and a no-op: keeps the middleware chain above it in one thread (see module doc)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
