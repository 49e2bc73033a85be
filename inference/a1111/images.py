"""Turning the images that A1111 API clients send into Pillow images, safely.

Clients put images into ``init_images``, ``mask``, ControlNet units and ``/png-info`` as raw base64,
as ``data:image/...;base64,`` URIs or (where the caller allows it) as http(s) URLs. Everything here
treats that input as hostile:

* :func:`decode_image` caps the encoded size before decoding, reads the pixel dimensions from the
  header before any pixel is decoded (a few-KB PNG can claim 50000×50000 pixels), accepts only
  PNG, JPEG, WebP, GIF (first frame) and BMP, and returns a fully loaded RGB or RGBA image.
* :class:`Fetcher` downloads a URL without letting it reach the platform's own network (SSRF):
  http(s) only, every resolved address must be public, the connection goes to the address that
  was checked (no second DNS lookup, so DNS rebinding does not help), redirects are followed by
  hand and re-checked per hop, and the body is streamed under a byte cap and an overall deadline.

The module does not import Django; callers pass limits from settings as arguments. Every error a
client can cause is an :class:`ImageInputError` whose message can be shown to that client.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
import socket
import time
import warnings
from collections.abc import Callable
from urllib.parse import urljoin

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from inference.request_errors import InvalidField

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "Fetcher",
    "IPAddress",
    "ImageInputError",
    "decode_image",
    "decode_image_bytes",
    "is_public_address",
    "open_image",
    "resolve_host",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096

#: Pillow format names that :func:`decode_image` opens. Everything else is refused by name.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_WHITESPACE = re.compile(r"\s+")
_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),", re.IGNORECASE)

# Magic numbers of formats that are images but not accepted, only to word the error message.
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
)


class ImageInputError(InvalidField):
    """A client-supplied image (or image URL) was refused; ``str(error)`` is safe to show them.

    An :class:`~inference.request_errors.InvalidField` (a ``ValueError``): ``ImageInputError(message)``,
    with ``field=`` where the caller knows which one.
    """


# --------------------------------------------------------------------------------------------
# Decoding


def decode_image(
    value: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fetch: Fetcher | None = None,
) -> Image.Image:
    """Decode a client-supplied image: raw base64, a ``data:image/...;base64,`` URI, or an http(s)
    URL when ``fetch`` is given. Returns a fully loaded, detached RGB or RGBA image (EXIF
    orientation applied, as A1111's ``fix_image`` does). Raises :class:`ImageInputError`."""
    data = decode_image_bytes(value, max_bytes=max_bytes, fetch=fetch)
    return open_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def decode_image_bytes(value: str, *, max_bytes: int = DEFAULT_MAX_BYTES, fetch: Fetcher | None = None) -> bytes:
    """The encoded image bytes behind ``value`` (base64, data URI, or URL when ``fetch`` is
    given), size-capped but not yet opened - for callers such as ``/png-info`` that need the
    file itself. Raises :class:`ImageInputError`."""
    if not isinstance(value, str):
        raise ImageInputError("image must be a base64 string")
    text = value.strip()
    if not text:
        raise ImageInputError("image is empty")
    lowered = text[:16].lower()
    if lowered.startswith(("http://", "https://")):
        if fetch is None:
            raise ImageInputError("image URLs are not accepted here; send the image as base64")
        data = fetch.fetch(text)
    elif lowered.startswith("data:"):
        data = _decode_base64(_data_uri_payload(text), max_bytes=max_bytes)
    elif re.match(r"^[a-z][a-z0-9+.-]*://", lowered):
        raise ImageInputError("URL not allowed: only http and https URLs are accepted")
    else:
        data = _decode_base64(text, max_bytes=max_bytes)
    if len(data) > max_bytes:
        raise ImageInputError(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    return data


def open_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open already-decoded image bytes with the same checks as :func:`decode_image`."""
    if len(data) > max_bytes:
        raise ImageInputError(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise ImageInputError("image is empty")
    with warnings.catch_warnings():
        # Pillow's own bomb guard must refuse too, whatever max_pixels the caller chose.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(_header_size(data), max_pixels) from exc
        except UnidentifiedImageError as exc:
            raise ImageInputError(_unidentified_message(data)) from exc
        except Exception as exc:  # malformed headers raise all sorts (SyntaxError, struct.error, ...)
            raise ImageInputError("not a valid image: the file is corrupt") from exc

        width, height = image.size
        if width <= 0 or height <= 0 or width * height > max_pixels:
            image.close()
            if width <= 0 or height <= 0:
                raise ImageInputError("not a valid image: it has no pixels")
            raise _too_many_pixels((width, height), max_pixels)

        try:
            image.seek(0)  # GIF/WebP: the first frame only
            image.load()
            return _normalise(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels((width, height), max_pixels) from exc
        except Exception as exc:
            raise ImageInputError("not a valid image: the data is truncated or corrupt") from exc
        finally:
            image.close()


def _data_uri_payload(text: str) -> str:
    match = _DATA_URI.match(text[:256])
    if match is None:
        raise ImageInputError("not a valid data URI")
    mime = match["mime"].strip().lower()
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if mime and not mime.startswith("image/"):
        raise ImageInputError(f"data URI is {mime!r}, not an image")
    if "base64" not in params:
        raise ImageInputError("data URI must be base64-encoded (data:image/...;base64,...)")
    return text[match.end() :]


def _decode_base64(text: str, *, max_bytes: int) -> bytes:
    # 4 characters carry 3 bytes; allow padding. Check before stripping (cheap, bounds the work)
    # and again after, since MIME-style base64 may wrap lines.
    limit = 4 * -(-max_bytes // 3)
    if len(text) > 2 * limit + 1024:
        raise _too_large_encoded(len(text), max_bytes)
    text = _WHITESPACE.sub("", text)
    if len(text) > limit:
        raise _too_large_encoded(len(text), max_bytes)
    text += "=" * (-len(text) % 4)  # some clients drop the padding
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError("not valid base64") from exc
    if not data:
        raise ImageInputError("image is empty")
    return data


def _too_large_encoded(length: int, max_bytes: int) -> ImageInputError:
    return ImageInputError(
        f"image data is too large ({length} base64 characters, about {length * 3 // 4} bytes); "
        f"the limit is {max_bytes} bytes"
    )


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> ImageInputError:
    if size is None:
        return ImageInputError(f"image has too many pixels; the limit is {max_pixels} pixels")
    return ImageInputError(f"image is {size[0]}×{size[1]} pixels; the limit is {max_pixels} pixels")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """The dimensions a header claims, read with the format plugin directly (no bomb check, no
    pixel decoding) - only to word the error once Pillow has refused the image as a bomb."""
    Image.init()
    prefix = data[:16]
    for name in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[name]
        try:
            if accept is not None and accept(prefix) is not True:
                continue
            with factory(io.BytesIO(data), None) as image:
                return image.size
        except Exception:
            continue
    return None


def _unidentified_message(data: bytes) -> str:
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return f"unsupported image format {name}; PNG, JPEG, WebP, GIF and BMP are accepted"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "unsupported image format AVIF/HEIF; PNG, JPEG, WebP, GIF and BMP are accepted"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "unsupported image format SVG; PNG, JPEG, WebP, GIF and BMP are accepted"
    return "not an image (PNG, JPEG, WebP, GIF and BMP are accepted)"


def _normalise(image: Image.Image) -> Image.Image:
    """A detached RGB/RGBA copy, upright per its EXIF orientation."""
    transposed = ImageOps.exif_transpose(image)  # a new image when a rotation was applied
    source = transposed if transposed is not None else image
    has_alpha = source.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        source.mode == "P" and "transparency" in source.info
    ) or (source.mode in ("L", "RGB") and "transparency" in source.info)
    target = "RGBA" if has_alpha else "RGB"
    if source.mode == target:
        return source.copy() if source is image else source
    if source.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        source = source.convert("I").point(lambda v: v / 256).convert("L")
    return source.convert(target)


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
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        allow_private: bool = False,
        is_allowed_address: Callable[[IPAddress], bool] | None = None,
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

    def fetch(self, url: str) -> bytes:
        """GET ``url`` and return its body; raises :class:`ImageInputError` on refusal, a non-2xx
        answer, too many redirects, a body over ``max_bytes`` or the ``timeout_s`` deadline."""
        deadline = time.monotonic() + self.timeout_s
        current = url
        for _hop in range(self.max_redirects + 1):
            target = self._check_url(current)
            status, location, body = self._request(target, deadline)
            if status in _REDIRECT_STATUSES and location is not None:
                current = urljoin(str(target), location)
                continue
            if status in _REDIRECT_STATUSES:
                raise ImageInputError(f"the image URL answered HTTP {status} without a Location")
            assert body is not None
            return body
        raise ImageInputError(f"the image URL redirected more than {self.max_redirects} times")

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
        addresses = resolve_host(url.raw_host.decode("ascii"), port)  # IDNA-encoded
        if not all(self._is_allowed(address) for address in addresses):
            raise ImageInputError("URL not allowed: its host resolves to a non-public address")
        return addresses

    def _request(self, url: httpx.URL, deadline: float) -> tuple[int, str | None, bytes | None]:
        """Connect to a checked address of ``url``'s host (never re-resolving it) and GET it,
        presenting the original host name in ``Host`` and, for https, in SNI and certificate
        verification. Returns (status, Location, body); the body is None for redirects."""
        addresses = self._addresses(url)
        host_header = url.netloc.decode("ascii")
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        last_error: Exception | None = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ImageInputError("fetching the image URL timed out")
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
                            "Accept": "image/*",
                            "Accept-Encoding": "identity",
                            "User-Agent": "atelier-image-fetch/1",
                        },
                        extensions=extensions,
                    )
                    response = client.send(request, stream=True)
                    try:
                        return self._read(response, deadline)
                    finally:
                        response.close()
            except httpx.ConnectError as exc:
                last_error = exc  # try the host's next (also checked) address
                continue
            except httpx.TimeoutException as exc:
                raise ImageInputError("fetching the image URL timed out") from exc
            except httpx.HTTPError as exc:
                raise ImageInputError("could not fetch the image URL") from exc
        raise ImageInputError("could not connect to the image URL's host") from last_error

    def _read(self, response: httpx.Response, deadline: float) -> tuple[int, str | None, bytes | None]:
        status = response.status_code
        if status in _REDIRECT_STATUSES:
            return status, response.headers.get("location"), None
        if not 200 <= status < 300:
            raise ImageInputError(f"the image URL answered HTTP {status}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ImageInputError("the image URL sent a compressed (Content-Encoding) response")
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise _too_large_download(self.max_bytes)
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise _too_large_download(self.max_bytes)
            if time.monotonic() > deadline:
                raise ImageInputError("fetching the image URL timed out")
        return status, None, bytes(body)


def _too_large_download(max_bytes: int) -> ImageInputError:
    return ImageInputError(f"the image at the URL is larger than the limit of {max_bytes} bytes")
