"""Fetching image URLs without letting a client reach the platform's own network (SSRF).

:class:`Fetcher` downloads a URL for :func:`a1111.images.decode_image`: http(s) only, every
resolved address must be public, the connection goes to the address that was checked (no second
DNS lookup, so DNS rebinding does not help), redirects are followed by hand and re-checked per
hop, and the body is streamed under a byte cap and an overall deadline. Every refusal is an
:class:`a1111.images.ImageInputError` whose message can be shown to the client.

`Fetcher.fetch` returns a (small) body; `Fetcher.stream` hands a large one (a model download,
`inference/model_downloads.py`) to a callable chunk by chunk. `allowed_hosts` names internal
mirrors an operator trusts (`host` or `host:port`): their addresses may be private, every other
host's must still be public - per hop, so a redirect from a mirror elsewhere is checked again.

The module does not import Django; callers pass limits from settings as arguments.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urljoin

import httpx

from a1111.images import DEFAULT_MAX_BYTES, ImageInputError

__all__ = ["Fetcher", "IPAddress", "is_public_address", "resolve_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


# --------------------------------------------------------------------------------------------
# Fetching URLs (SSRF-safe)


def is_public_address(address: IPAddress) -> bool:
    """True if ``address`` is a globally routable unicast address: not loopback, private,
    link-local (169.254.0.0/16 - cloud metadata), shared (100.64.0.0/10), multicast, reserved,
    unspecified or documentation space - also when embedded in IPv6 (IPv4-mapped, NAT64, 6to4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public_address(address.ipv4_mapped)
        if address.sixtofour is not None:
            return is_public_address(address.sixtofour)
        if address in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.teredo is not None:
            return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in _SHARED_ADDRESS_SPACE
        or not address.is_global
    )


_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (IP literals, including odd IPv4 spellings such as
    ``0x7f.1`` or ``2130706433``, come back as the address they mean). Module-level so tests
    can substitute a resolver."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise ImageInputError(f"could not resolve the URL's host {host!r}") from exc
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ImageInputError(f"could not resolve the URL's host {host!r}")
    return addresses


class Fetcher:
    """Downloads image URLs without exposing the internal network.

    ``is_allowed_address`` decides which resolved addresses may be contacted (default:
    :func:`is_public_address`; ``allow_private=True`` allows every address and exists only for
    tests against a 127.0.0.1 server - production code never sets either). It is called once for
    every address of every hop, so a test can allow the first hop and refuse a redirect.

    ``timeout_s`` is a deadline for the whole fetch, redirects included: each hop's network
    operations get the time left when the hop starts, and the body loop checks the deadline after
    every chunk, so a trickling (slow-loris) body ends within about one read of the deadline.
    Responses with a ``Content-Encoding`` are refused (``identity`` is requested), so the byte cap
    counts the bytes actually received and no decompression bomb is inflated.

    ``subject`` names what is fetched in messages ("the image URL …"); subclasses change it with
    ``accept`` and ``user_agent``.
    """

    subject = "image"
    accept = "image/*"
    user_agent = "atelier-image-fetch/1"

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        allow_private: bool = False,
        is_allowed_address: Callable[[IPAddress], bool] | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        if is_allowed_address is not None and allow_private:
            raise ValueError("pass allow_private or is_allowed_address, not both")
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        if is_allowed_address is not None:
            self._is_allowed = is_allowed_address
        elif allow_private:
            self._is_allowed = lambda _address: True
        else:
            self._is_allowed = is_public_address
        self._allowed_hosts = frozenset(_host_key(entry) for entry in allowed_hosts if entry.strip())

    def fetch(self, url: str) -> bytes:
        """GET ``url`` and return its body; raises :class:`ImageInputError` on refusal, a non-2xx
        answer, too many redirects, a body over ``max_bytes`` or the ``timeout_s`` deadline."""
        body = bytearray()
        self.stream(url, body.extend)
        return bytes(body)

    def stream(
        self, url: str, write: Callable[[bytes], object], *,
        on_answer: Callable[[int, httpx.Headers], object] | None = None, headers: Mapping[str, str] | None = None,
    ) -> int:
        """GET ``url`` and hand its body to ``write`` chunk by chunk (under the same checks as
        :meth:`fetch`); returns the number of bytes written. ``on_answer`` hears the final answer's
        status and headers before its body; ``headers`` are sent on every hop (a ``Range`` to
        resume). An exception ``write`` or ``on_answer`` raises (a cancelled download) ends the
        fetch and propagates unchanged."""
        self._on_answer = on_answer
        self._extra_headers = dict(headers or {})
        deadline = time.monotonic() + self.timeout_s
        current = url
        for _hop in range(self.max_redirects + 1):
            target = self._check_url(current)
            status, location, size = self._request(target, deadline, write)
            if status in _REDIRECT_STATUSES and location is not None:
                current = urljoin(str(target), location)
                continue
            if status in _REDIRECT_STATUSES:
                raise ImageInputError(f"the {self.subject} URL answered HTTP {status} without a Location")
            return size
        raise ImageInputError(f"the {self.subject} URL redirected more than {self.max_redirects} times")

    # -- one hop ------------------------------------------------------------------------------

    def _check_url(self, url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ImageInputError("URL not allowed: it is not a valid URL") from exc
        if parsed.scheme not in ("http", "https"):
            raise ImageInputError("URL not allowed: only http and https URLs are accepted")
        if not parsed.host:
            raise ImageInputError("URL not allowed: it has no host")
        if parsed.userinfo:
            raise ImageInputError("URL not allowed: credentials in URLs are not accepted")
        return parsed

    def _addresses(self, url: httpx.URL) -> list[IPAddress]:
        port = url.port or (443 if url.scheme == "https" else 80)
        host = url.raw_host.decode("ascii").lower()
        addresses = resolve_host(host, port)  # IDNA-encoded
        if host in self._allowed_hosts or f"{host}:{port}" in self._allowed_hosts:
            return addresses  # an internal mirror the operator named
        if not all(self._is_allowed(address) for address in addresses):
            raise ImageInputError("URL not allowed: its host resolves to a non-public address")
        return addresses

    def _request(
        self, url: httpx.URL, deadline: float, write: Callable[[bytes], object]
    ) -> tuple[int, str | None, int]:
        """Connect to a checked address of ``url``'s host (never re-resolving it) and GET it,
        presenting the original host name in ``Host`` and, for https, in SNI and certificate
        verification. Returns (status, Location, bytes written); nothing is written for redirects."""
        addresses = self._addresses(url)
        host_header = url.netloc.decode("ascii")
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        last_error: Exception | None = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ImageInputError(f"fetching the {self.subject} URL timed out")
            pinned = url.copy_with(host=str(address))
            try:
                with httpx.Client(
                    timeout=httpx.Timeout(remaining),
                    follow_redirects=False,
                    trust_env=False,  # a proxy from the environment would resolve the name itself
                ) as client:
                    request = client.build_request(
                        "GET",
                        pinned,
                        headers={
                            "Host": host_header,
                            "Accept": self.accept,
                            "Accept-Encoding": "identity",
                            "User-Agent": self.user_agent,
                            **self._extra_headers,
                        },
                        extensions=extensions,
                    )
                    response = client.send(request, stream=True)
                    try:
                        return self._read(response, deadline, write)
                    finally:
                        response.close()
            except httpx.ConnectError as exc:
                last_error = exc  # try the host's next (also checked) address
                continue
            except httpx.TimeoutException as exc:
                raise ImageInputError(f"fetching the {self.subject} URL timed out") from exc
            except httpx.HTTPError as exc:
                raise ImageInputError(f"could not fetch the {self.subject} URL") from exc
        raise ImageInputError(f"could not connect to the {self.subject} URL's host") from last_error

    _on_answer: Callable[[int, httpx.Headers], object] | None = None
    _extra_headers: dict[str, str] = {}

    def _read(
        self, response: httpx.Response, deadline: float, write: Callable[[bytes], object]
    ) -> tuple[int, str | None, int]:
        status = response.status_code
        if status in _REDIRECT_STATUSES:
            return status, response.headers.get("location"), 0
        if not 200 <= status < 300:
            raise ImageInputError(f"the {self.subject} URL answered HTTP {status}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ImageInputError(f"the {self.subject} URL sent a compressed (Content-Encoding) response")
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise self._too_large()
        if self._on_answer is not None:
            self._on_answer(status, response.headers)
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            write(chunk)
            if time.monotonic() > deadline:
                raise ImageInputError(f"fetching the {self.subject} URL timed out")
        return status, None, size

    def _too_large(self) -> ImageInputError:
        return ImageInputError(f"the {self.subject} at the URL is larger than the limit of {self.max_bytes} bytes")


def _host_key(entry: str) -> str:
    """An allow-list entry as `host` or `host:port`, lower case (`[::1]:8080` keeps its brackets off)."""
    entry = entry.strip().lower()
    try:
        parsed = httpx.URL(f"http://{entry}")
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"not a host or host:port: {entry!r}") from exc
    host = parsed.raw_host.decode("ascii").lower()
    return f"{host}:{parsed.port}" if parsed.port is not None else host
