"""The hand-written protobuf encoding of the EAS queue messages (inference/eas/frames.py),
checked against the bytes protobuf 3.20.3 writes (reference: shared/reference/eas_queue.md §4.1)."""

import pytest

from inference.eas.frames import (
    UINT64_MAX,
    FrameDecodeError,
    decode_attributes,
    decode_frame,
    decode_frame_list,
    encode_attributes,
    encode_frame,
    encode_frame_list,
)

# index=3, tags={'requestId': 'abc'}, data=b'hi', message='OK', as serialized by protobuf 3.20.3.
REFERENCE = bytes.fromhex("0803") + bytes.fromhex("12100a09") + b"requestId" + bytes.fromhex("1203") + b"abc"
REFERENCE += bytes.fromhex("1a02") + b"hi" + bytes.fromhex("2202") + b"OK"


def test_the_reference_frame_is_encoded_byte_for_byte():
    assert encode_frame(3, {"requestId": "abc"}, b"hi", "OK") == REFERENCE
    assert decode_frame(REFERENCE) == (3, {"requestId": "abc"}, b"hi", "OK")


def test_several_tags_are_one_entry_each_in_mapping_order():
    raw = encode_frame(1, {"task_id": "job_001", "requestId": "r-1", "lastCode": "500"}, b"{}")
    entries = (
        bytes.fromhex("1212") + bytes.fromhex("0a07") + b"task_id" + bytes.fromhex("1207") + b"job_001",
        bytes.fromhex("1210") + bytes.fromhex("0a09") + b"requestId" + bytes.fromhex("1203") + b"r-1",
        bytes.fromhex("120f") + bytes.fromhex("0a08") + b"lastCode" + bytes.fromhex("1203") + b"500",
    )
    assert raw == bytes.fromhex("0801") + b"".join(entries) + bytes.fromhex("1a02") + b"{}"
    assert decode_frame(raw) == (1, {"task_id": "job_001", "requestId": "r-1", "lastCode": "500"}, b"{}", "")


def test_zero_and_empty_fields_are_omitted():
    assert encode_frame(0, {}, b"", "") == b""
    assert decode_frame(b"") == (0, {}, b"", "")
    # An index-only frame (`_index_only_=true`): no data field at all.
    assert encode_frame(7, {"a": "b"}, b"") == bytes.fromhex("0807") + bytes.fromhex("1206 0a01") + b"a" + bytes.fromhex("1201") + b"b"
    # A map entry holds its key and value even when empty, as protobuf 3.20.3's serializer writes it;
    # an entry with either left out (as other encoders may write it) decodes to "".
    assert encode_frame(1, {"k": ""}, b"") == bytes.fromhex("0801 1205 0a01") + b"k" + bytes.fromhex("1200")
    assert encode_frame(1, {"": "v"}, b"") == bytes.fromhex("0801 1205 0a00 1201") + b"v"
    assert decode_frame(bytes.fromhex("0801 1203 0a01") + b"k") == (1, {"k": ""}, b"", "")
    assert decode_frame(bytes.fromhex("1200")) == (0, {"": ""}, b"", "")


@pytest.mark.parametrize(
    ("index", "varint"),
    [
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (1 << 32, "8080808010"),
        (UINT64_MAX, "ffffffffffffffffff01"),
    ],
)
def test_indexes_are_uint64_varints(index, varint):
    raw = encode_frame(index, {}, b"")
    assert raw == bytes.fromhex("08" + varint)
    assert decode_frame(raw)[0] == index


def test_indexes_outside_uint64_are_refused():
    with pytest.raises(ValueError):
        encode_frame(-1, {}, b"")
    with pytest.raises(ValueError):
        encode_frame(UINT64_MAX + 1, {}, b"")
    with pytest.raises(FrameDecodeError):
        decode_frame(bytes.fromhex("08ffffffffffffffffff7f"))


def test_unicode_tags_and_messages_are_utf8():
    tags = {"任务": "猫 🐱", "prompt": "café"}
    raw = encode_frame(2, tags, "données".encode(), "ça va")
    assert "猫 🐱".encode() in raw
    assert decode_frame(raw) == (2, tags, "données".encode(), "ça va")
    with pytest.raises(FrameDecodeError):
        decode_frame(bytes.fromhex("2201ff"))


def test_large_data_has_a_multi_byte_length():
    data = bytes(range(256)) * 1000
    raw = encode_frame(9, {}, data)
    assert raw[:6] == bytes.fromhex("0809 1a80d00f")
    assert decode_frame(raw) == (9, {}, data, "")


def test_frame_lists_round_trip_and_nest_each_frame():
    frames = [(3, {"requestId": "abc"}, b"hi", "OK"), (4, {}, b"", ""), (5, {"t": "x"}, b"\x00\x01", "")]
    raw = encode_frame_list(frames)
    assert raw.startswith(bytes.fromhex("0a") + bytes([len(REFERENCE)]) + REFERENCE)
    assert bytes.fromhex("0a0208 04") in raw  # an empty-bodied frame still has its entry
    assert decode_frame_list(raw) == frames
    assert encode_frame_list([]) == b""
    assert decode_frame_list(b"") == []


def test_attributes_round_trip():
    attributes = {"meta.name": "svc/sink", "stream.length": "0", "meta.maxPayloadBytes": "8192"}
    raw = encode_attributes(attributes)
    assert raw.startswith(bytes.fromhex("0a15 0a09") + b"meta.name" + bytes.fromhex("1208") + b"svc/sink")
    assert decode_attributes(raw) == attributes
    assert list(decode_attributes(raw)) == list(attributes)


def test_decoding_skips_unknown_fields_and_accepts_any_field_order():
    unknown = bytes.fromhex("2801") + bytes.fromhex("3d01020304") + bytes.fromhex("3901020304050607 08") + bytes.fromhex("4201") + b"z"
    raw = bytes.fromhex("2202") + b"OK" + unknown + bytes.fromhex("1a02") + b"hi" + bytes.fromhex("0803")
    raw += bytes.fromhex("12100a09") + b"requestId" + bytes.fromhex("1203") + b"abc"
    assert decode_frame(raw) == (3, {"requestId": "abc"}, b"hi", "OK")
    # A repeated map key keeps its last value, as protobuf's parser does.
    twice = encode_frame(1, {"k": "a"}, b"") + encode_frame(0, {"k": "b"}, b"")
    assert decode_frame(twice) == (1, {"k": "b"}, b"", "")


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("08"),  # truncated varint
        bytes.fromhex("1a05") + b"hi",  # length past the end
        bytes.fromhex("0b"),  # wire type 3 (groups) is not supported
        bytes.fromhex("0a01") + b"x",  # field 1 must be a varint
        bytes.fromhex("1801"),  # field 3 must be length-delimited
        bytes.fromhex("0001"),  # field number 0
        bytes.fromhex("3d0102"),  # truncated fixed32
    ],
)
def test_malformed_bytes_raise_a_decode_error(raw):
    with pytest.raises(FrameDecodeError):
        decode_frame(raw)


def test_tags_must_be_strings():
    with pytest.raises(TypeError):
        encode_frame(1, {"n": 1}, b"")  # type: ignore[dict-item]
