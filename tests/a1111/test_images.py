"""a1111.images: decoding client images safely and fetching image URLs without SSRF.

Every network test talks only to servers this module starts on 127.0.0.1; an autouse fixture
makes any other connection attempt fail loudly."""

from __future__ import annotations

import base64
import io
import ipaddress
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from a1111 import images
from a1111.images import ImageInputError, decode_image, decode_image_bytes
from inference.inputs import fetch as fetching
from inference.inputs.fetch import Fetcher, is_public_address

# ---------------------------------------------------------------------------------------------
# helpers


def encode(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims width×height RGB pixels (a decompression bomb
    as far as the header is concerned; its IDAT holds only a few bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def only_loopback_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Refuse (and record) any outgoing connection that is not to 127.0.0.1."""
    attempts: list[object] = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        if address[0] != "127.0.0.1":
            attempts.append(address)
            raise OSError(f"test guard: connection to {address!r} refused")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    yield attempts
    assert attempts == [], f"tried to connect outside 127.0.0.1: {attempts}"


class Listener:
    """A bare TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


Handler = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A threaded HTTP server on 127.0.0.1 whose GET handler is a plain function."""

    def __init__(self, handle: Handler) -> None:
        self.requests: list[dict[str, str]] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append({"path": self.path, "host": self.headers.get("Host", "")})
                try:
                    handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Server]]:
    started: list[Server] = []

    def start(handle: Handler) -> Server:
        server = Server(handle)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def send_body(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(body)

    return handle


def redirect_to(location: str, status: int = 302) -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        request.send_header("Location", location)
        request.send_header("Content-Length", "0")
        request.end_headers()

    return handle


class AllowFirstHop:
    """An address check that allows the first hop's addresses (a stand-in for a public host)
    and applies the production rule to every later hop."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, address: fetching.IPAddress) -> bool:
        self.calls += 1
        return self.calls == 1 or is_public_address(address)


SAMPLE = Image.new("RGB", (7, 5), (200, 10, 30))
SAMPLE_PNG = encode(SAMPLE)
NOISE_PNG = encode(Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48))


# ---------------------------------------------------------------------------------------------
# decoding


def test_base64_png_round_trip() -> None:
    image = decode_image(b64(SAMPLE_PNG))
    assert image.mode == "RGB" and image.size == (7, 5)
    assert image.getpixel((3, 2)) == (200, 10, 30)


def test_data_uri_round_trip_and_rgba_is_kept() -> None:
    rgba = Image.new("RGBA", (4, 4), (1, 2, 3, 128))
    image = decode_image("data:image/png;base64," + b64(encode(rgba)))
    assert image.mode == "RGBA" and image.getpixel((0, 0)) == (1, 2, 3, 128)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF"])
def test_other_accepted_formats(fmt: str) -> None:
    image = decode_image(f"data:image/{fmt.lower()};base64," + b64(encode(SAMPLE, fmt)))
    assert image.mode in ("RGB", "RGBA") and image.size == (7, 5)


def test_gif_first_frame_only() -> None:
    frames = [Image.new("RGB", (6, 6), (255, 0, 0)), Image.new("RGB", (6, 6), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    image = decode_image(b64(data))
    red, green, blue = image.convert("RGB").getpixel((0, 0))
    assert red > 200 and blue < 50


def test_palette_with_transparency_becomes_rgba_and_grey_becomes_rgb() -> None:
    palette = Image.new("P", (3, 3), 0)
    palette.info["transparency"] = 0
    assert decode_image(b64(encode(palette, transparency=0))).mode == "RGBA"
    assert decode_image(b64(encode(Image.new("L", (3, 3), 9)))).mode == "RGB"


def test_the_image_is_fully_loaded_and_detached() -> None:
    image = decode_image(b64(SAMPLE_PNG))
    assert getattr(image, "fp", None) is None
    assert image.tobytes()[:3] == bytes([200, 10, 30])


def test_wrapped_and_unpadded_base64_is_accepted() -> None:
    text = b64(SAMPLE_PNG)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_image(wrapped).size == (7, 5)
    assert decode_image(text.rstrip("=")).size == (7, 5)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = encode(Image.new("RGB", (8, 4)), "JPEG", exif=exif.tobytes())
    assert decode_image(b64(data)).size == (4, 8)


def test_oversize_encoded_input_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decode(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded an oversize input")

    monkeypatch.setattr(images.base64, "b64decode", no_decode)
    with pytest.raises(ImageInputError, match="too large.*the limit is 1000 bytes"):
        decode_image("A" * 5000, max_bytes=1000)
    with pytest.raises(ImageInputError, match="too large"):
        decode_image("A" * (30 * 1024 * 1024))  # default 20 MB cap (b64decode would raise)


def test_decoded_size_limit_applies_to_bytes() -> None:
    limit = len(SAMPLE_PNG) - 1
    with pytest.raises(ImageInputError):
        decode_image(b64(SAMPLE_PNG), max_bytes=limit)


def test_decompression_bomb_is_refused_from_the_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load(self: Image.Image) -> None:
        raise AssertionError("decoded the pixels of a decompression bomb")

    monkeypatch.setattr(Image.Image, "load", no_load)
    data = png_claiming(50000, 50000)
    assert len(data) < 200
    with pytest.raises(ImageInputError) as error:
        decode_image(b64(data))
    assert str(error.value) == "image is 50000×50000 pixels; the limit is 16777216 pixels"


def test_header_over_max_pixels_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load(self: Image.Image) -> None:
        raise AssertionError("decoded pixels of an image over the limit")

    monkeypatch.setattr(Image.Image, "load", no_load)
    monkeypatch.setattr(images.Image.Image, "load", no_load)
    with pytest.raises(ImageInputError, match="image is 2000×1000 pixels; the limit is 1000000 pixels"):
        decode_image(b64(png_claiming(2000, 1000)), max_pixels=1_000_000)


def test_pillows_bomb_warning_is_a_refusal_even_with_a_generous_limit() -> None:
    side = int((Image.MAX_IMAGE_PIXELS or 89_478_485) ** 0.5) + 100  # just over Pillow's warning
    with pytest.raises(ImageInputError, match=f"image is {side}×{side} pixels"):
        decode_image(b64(png_claiming(side, side)), max_pixels=10**12)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64 at all!!", "not valid base64"),
        (b64(b"hello, I am plain text and not an image"), "not an image"),
        (b64(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>"), "unsupported image format SVG"),
        ("data:text/html;base64," + b64(b"<h1>hi</h1>"), "not an image"),
        ("data:image/png," + "abc", "must be base64"),
        ("", "empty"),
        (b64(NOISE_PNG[: len(NOISE_PNG) // 2]), "truncated or corrupt"),
    ],
)
def test_bad_inputs(value: str, message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        decode_image(value)


def test_unsupported_format_is_named() -> None:
    with pytest.raises(ImageInputError, match="unsupported image format TIFF"):
        decode_image(b64(encode(SAMPLE, "TIFF")))


def test_urls_are_refused_without_a_fetcher(listener: Listener) -> None:
    for url in (f"http://127.0.0.1:{listener.port}/x.png", "https://example.com/x.png", "file:///etc/passwd"):
        with pytest.raises(ImageInputError, match="not accepted|not allowed"):
            decode_image(url)
    assert listener.connections == 0


def test_decode_image_bytes_returns_the_file() -> None:
    assert decode_image_bytes("data:image/png;base64," + b64(SAMPLE_PNG)) == SAMPLE_PNG


# ---------------------------------------------------------------------------------------------
# address rules


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
        "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
        "64:ff9b::a00:1", "2002:7f00:1::", "2001:db8::1",
    ],
)  # fmt: skip
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


# ---------------------------------------------------------------------------------------------
# fetching


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "0x7f.1", "2130706433", "0177.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0"],
)
def test_loopback_in_any_spelling_is_refused_and_never_contacted(listener: Listener, host: str) -> None:
    with pytest.raises(ImageInputError, match="URL not allowed"):
        Fetcher().fetch(f"http://{host}:{listener.port}/latest/meta-data/")
    assert listener.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://192.168.0.1:8080/admin",
        "https://[fd00::1]/x.png",
        "http://[::ffff:a9fe:a9fe]/",
    ],
)
def test_private_addresses_are_refused(url: str, only_loopback_connections: list[object]) -> None:
    with pytest.raises(ImageInputError, match="URL not allowed"):
        Fetcher().fetch(url)
    assert only_loopback_connections == []


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://127.0.0.1/x.png", "data:image/png;base64,AAAA", "//x/y"],
)
def test_only_http_and_https_schemes(url: str) -> None:
    with pytest.raises(ImageInputError, match="URL not allowed"):
        Fetcher(allow_private=True).fetch(url)


def test_decode_image_fetches_with_a_fetcher(serve: Callable[[Handler], Server]) -> None:
    server = serve(send_body(SAMPLE_PNG))
    image = decode_image(f"{server.url}/x.png", fetch=Fetcher(allow_private=True))
    assert image.size == (7, 5)
    assert server.requests == [{"path": "/x.png", "host": f"127.0.0.1:{server.port}"}]


def test_file_url_is_refused_even_with_a_fetcher() -> None:
    with pytest.raises(ImageInputError, match="URL not allowed"):
        decode_image("file:///etc/passwd", fetch=Fetcher(allow_private=True))


def test_connection_goes_to_the_checked_address_with_the_original_host(
    serve: Callable[[Handler], Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is resolved once per hop and the connection is made to that
    checked address; a later answer (here: 10.0.0.1) is never looked up or used."""
    server = serve(send_body(SAMPLE_PNG))
    answers = iter([[ipaddress.ip_address("127.0.0.1")]])
    lookups: list[str] = []

    def rebinding_resolver(host: str, port: int) -> list[fetching.IPAddress]:
        lookups.append(host)
        return next(answers, [ipaddress.ip_address("10.0.0.1")])

    monkeypatch.setattr(fetching, "resolve_host", rebinding_resolver)
    fetcher = Fetcher(is_allowed_address=lambda address: str(address) == "127.0.0.1")
    assert fetcher.fetch(f"http://images.rebind.test:{server.port}/a.png") == SAMPLE_PNG
    assert lookups == ["images.rebind.test"]
    assert server.requests[0]["host"] == f"images.rebind.test:{server.port}"


def test_every_resolved_address_must_be_allowed(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        fetching, "resolve_host", lambda host, port: [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.1.1")]
    )
    fetcher = Fetcher(is_allowed_address=lambda address: str(address) == "127.0.0.1")
    with pytest.raises(ImageInputError, match="URL not allowed"):
        fetcher.fetch(f"http://mixed.test:{listener.port}/")
    assert listener.connections == 0


def test_redirect_to_a_private_address_is_refused_at_the_hop(
    serve: Callable[[Handler], Server], listener: Listener
) -> None:
    first = serve(redirect_to(f"http://127.0.0.1:{listener.port}/admin"))
    with pytest.raises(ImageInputError, match="URL not allowed"):
        Fetcher(is_allowed_address=AllowFirstHop()).fetch(f"{first.url}/start.png")
    assert len(first.requests) == 1
    assert listener.connections == 0


def test_redirect_to_a_refused_scheme(serve: Callable[[Handler], Server]) -> None:
    first = serve(redirect_to("file:///etc/passwd"))
    with pytest.raises(ImageInputError, match="only http and https"):
        Fetcher(allow_private=True).fetch(first.url)


def test_redirects_are_followed_and_capped(serve: Callable[[Handler], Server]) -> None:
    target = serve(send_body(SAMPLE_PNG))
    hop = serve(redirect_to(f"{target.url}/final.png", status=307))
    assert Fetcher(allow_private=True).fetch(f"{hop.url}/start") == SAMPLE_PNG
    assert target.requests[0]["path"] == "/final.png"

    loop = serve(redirect_to("/again"))  # relative Location, back to itself
    with pytest.raises(ImageInputError, match="redirected more than 2 times"):
        Fetcher(allow_private=True, max_redirects=2).fetch(loop.url)
    assert len(loop.requests) == 3


def test_non_2xx_is_an_error(serve: Callable[[Handler], Server]) -> None:
    server = serve(send_body(b"nope", status=404))
    with pytest.raises(ImageInputError, match="HTTP 404"):
        Fetcher(allow_private=True).fetch(server.url)


def test_endless_body_is_cut_at_max_bytes(serve: Callable[[Handler], Server]) -> None:
    def endless(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.end_headers()  # no Content-Length: read until close
        chunk = b"\0" * 65536
        for _ in range(100_000):
            request.wfile.write(chunk)

    server = serve(endless)
    with pytest.raises(ImageInputError, match="larger than the limit of 1048576 bytes"):  # not 6.5 GB later
        Fetcher(allow_private=True, max_bytes=1024 * 1024).fetch(server.url)


def test_declared_oversize_body_is_refused_before_reading(serve: Callable[[Handler], Server]) -> None:
    server = serve(send_body(b"\0" * 5000))
    with pytest.raises(ImageInputError, match="larger than the limit of 1000 bytes"):
        Fetcher(allow_private=True, max_bytes=1000).fetch(server.url)


def test_compressed_responses_are_refused(serve: Callable[[Handler], Server]) -> None:
    server = serve(send_body(zlib.compress(b"\0" * 100), headers={"Content-Encoding": "deflate"}))
    with pytest.raises(ImageInputError, match="compressed"):
        Fetcher(allow_private=True).fetch(server.url)


def test_slow_loris_body_hits_the_overall_deadline(serve: Callable[[Handler], Server]) -> None:
    def trickle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", "100000")
        request.end_headers()
        for _ in range(1200):  # a byte every 50 ms: each read is quick, the whole body takes 60 s
            request.wfile.write(b"\0")
            request.wfile.flush()
            time.sleep(0.05)

    server = serve(trickle)
    started = time.monotonic()
    with pytest.raises(ImageInputError, match="timed out"):
        Fetcher(allow_private=True, timeout_s=0.6).fetch(server.url)
    # The overall deadline, not the end of the body: a margin no machine load can eat.
    assert time.monotonic() - started < 30


def test_silent_server_times_out(serve: Callable[[Handler], Server]) -> None:
    server = serve(lambda request: time.sleep(60))
    started = time.monotonic()
    with pytest.raises(ImageInputError, match="timed out"):
        Fetcher(allow_private=True, timeout_s=0.5).fetch(server.url)
    assert time.monotonic() - started < 30  # the deadline, not the server's 60 s
