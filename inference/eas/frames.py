"""The protobuf messages of the PAI-EAS queue service, encoded and decoded by hand.

The official SDK (`eas-prediction`) speaks three proto3 messages of package `streaming`
(reference: shared/reference/eas_queue.md §4.1):

    message DataFrameProto     { uint64 index = 1; map<string,string> tags = 2; bytes data = 3; string message = 4; }
    message DataFrameListProto { repeated DataFrameProto index = 1; }
    message AttributesProto    { map<string,string> attributes = 1; }

They need only two wire types (varint and length-delimited), so the server writes and reads them
here instead of depending on the `protobuf` package (whose 3.x generated code the SDK pins and
which newer protobuf releases refuse to import). Pure: the standard library only.

Encoding follows what protobuf's own serializer writes: fields in number order, proto3 zero/empty
scalars omitted, one length-delimited entry per map item in the mapping's order, holding both its
key (1) and its value (2) even when empty (protobuf 3.20.3 writes them so). Decoding accepts
anything a conforming encoder may write: fields in any order, unknown fields skipped, a repeated
map key keeping its last value. `tests/inference/eas_protobuf_crosscheck.py` checks both directions
against protobuf 3.20.3 itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

UINT64_MAX = (1 << 64) - 1

_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2
_FIXED32 = 5

DecodedFrame = tuple[int, dict[str, str], bytes, str]


class FrameDecodeError(ValueError):
    """The bytes are not a well-formed message of the expected type."""


# --- writing -----------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0 or value > UINT64_MAX:
        raise ValueError(f"varint out of the uint64 range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _string_map(field: int, mapping: Mapping[str, str]) -> bytes:
    out = bytearray()
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"map entries must be str -> str, got {type(key).__name__} -> {type(value).__name__}")
        entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, value.encode("utf-8"))
        out += _length_delimited(field, entry)
    return bytes(out)


def encode_frame(index: int, tags: Mapping[str, str], data: bytes, message: str = "") -> bytes:
    """One serialized `DataFrameProto` (what a watch websocket sends as one binary frame)."""
    out = bytearray()
    if index:
        out += _key(1, _VARINT) + _varint(index)
    out += _string_map(2, tags)
    if data:
        out += _length_delimited(3, bytes(data))
    if message:
        out += _length_delimited(4, message.encode("utf-8"))
    return bytes(out)


def encode_frame_list(frames: Iterable[tuple[int, Mapping[str, str], bytes, str]]) -> bytes:
    """One serialized `DataFrameListProto` (the body of a protobuf `get`); no frames gives b""."""
    out = bytearray()
    for index, tags, data, message in frames:
        out += _length_delimited(1, encode_frame(index, tags, data, message))
    return bytes(out)


def encode_attributes(attributes: Mapping[str, str]) -> bytes:
    """One serialized `AttributesProto` (the body of `_attrs_` for a protobuf Accept header)."""
    return _string_map(1, attributes)


# --- reading -----------------------------------------------------------------------------------


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(raw):
            raise FrameDecodeError("truncated varint")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise FrameDecodeError("varint longer than 10 bytes")
    if value > UINT64_MAX:
        raise FrameDecodeError("varint out of the uint64 range")
    return value, pos


def _fields(raw: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field: an int for varints, bytes otherwise."""
    pos = 0
    while pos < len(raw):
        key, pos = _read_varint(raw, pos)
        field, wire_type = key >> 3, key & 0x7
        if field == 0:
            raise FrameDecodeError("field number 0")
        if wire_type == _VARINT:
            value, pos = _read_varint(raw, pos)
            yield field, wire_type, value
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _read_varint(raw, pos)
            if pos + length > len(raw):
                raise FrameDecodeError("truncated length-delimited field")
            yield field, wire_type, raw[pos : pos + length]
            pos += length
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            if pos + size > len(raw):
                raise FrameDecodeError("truncated fixed-width field")
            yield field, wire_type, raw[pos : pos + size]
            pos += size
        else:
            raise FrameDecodeError(f"unsupported wire type {wire_type}")


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameDecodeError(f"string field is not UTF-8: {exc}") from None


def _expect_bytes(field: int, wire_type: int, value: int | bytes) -> bytes:
    if wire_type != _LENGTH_DELIMITED or not isinstance(value, bytes):
        raise FrameDecodeError(f"field {field} must be length-delimited")
    return value


def _map_entry(raw: bytes) -> tuple[str, str]:
    key = value = ""
    for field, wire_type, item in _fields(raw):
        if field == 1:
            key = _text(_expect_bytes(field, wire_type, item))
        elif field == 2:
            value = _text(_expect_bytes(field, wire_type, item))
    return key, value


def decode_frame(raw: bytes) -> DecodedFrame:
    """(index, tags, data, message) of one serialized `DataFrameProto`."""
    index = 0
    tags: dict[str, str] = {}
    data = b""
    message = ""
    for field, wire_type, value in _fields(bytes(raw)):
        if field == 1:
            if wire_type != _VARINT or not isinstance(value, int):
                raise FrameDecodeError("field 1 (index) must be a varint")
            index = value
        elif field == 2:
            key, item = _map_entry(_expect_bytes(field, wire_type, value))
            tags[key] = item
        elif field == 3:
            data = _expect_bytes(field, wire_type, value)
        elif field == 4:
            message = _text(_expect_bytes(field, wire_type, value))
    return index, tags, data, message


def decode_frame_list(raw: bytes) -> list[DecodedFrame]:
    """The frames of one serialized `DataFrameListProto`, in wire order."""
    return [
        decode_frame(_expect_bytes(field, wire_type, value))
        for field, wire_type, value in _fields(bytes(raw))
        if field == 1
    ]


def decode_attributes(raw: bytes) -> dict[str, str]:
    """The mapping of one serialized `AttributesProto`."""
    attributes: dict[str, str] = {}
    for field, wire_type, value in _fields(bytes(raw)):
        if field == 1:
            key, item = _map_entry(_expect_bytes(field, wire_type, value))
            attributes[key] = item
    return attributes
