"""Cross-check inference/eas/frames.py against protobuf 3.20.3's own generated classes.

Run with an interpreter that has protobuf==3.20.3 (not the project venv), from the repository root:
    PYTHONPATH=. /tmp/eas-pb-venv/bin/python tests/inference/eas_protobuf_crosscheck.py
The messages are built from the reference's .proto (shared/reference/eas_queue.md §4.1) through a
FileDescriptorProto, so no protoc is needed. Both directions are checked: our bytes parse with
protobuf, and protobuf's bytes decode with ours (and are byte-identical to ours).
"""

from __future__ import annotations

import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from inference.eas import frames

F = descriptor_pb2.FieldDescriptorProto


def _build():
    file = descriptor_pb2.FileDescriptorProto(name="queueservice.proto", package="streaming", syntax="proto3")

    def map_entry(parent, name):
        entry = parent.nested_type.add(name=name, options=descriptor_pb2.MessageOptions(map_entry=True))
        entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)

    frame = file.message_type.add(name="DataFrameProto")
    frame.field.add(name="index", number=1, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    map_entry(frame, "TagsEntry")
    frame.field.add(name="tags", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                    type_name=".streaming.DataFrameProto.TagsEntry")
    frame.field.add(name="data", number=3, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    frame.field.add(name="message", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    lst = file.message_type.add(name="DataFrameListProto")
    lst.field.add(name="index", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                  type_name=".streaming.DataFrameProto")
    attrs = file.message_type.add(name="AttributesProto")
    map_entry(attrs, "AttributesEntry")
    attrs.field.add(name="attributes", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                    type_name=".streaming.AttributesProto.AttributesEntry")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    get = message_factory.MessageFactory(pool).GetPrototype
    return (get(pool.FindMessageTypeByName(f"streaming.{n}")) for n in ("DataFrameProto", "DataFrameListProto", "AttributesProto"))


def main() -> int:
    import google.protobuf

    DataFrameProto, DataFrameListProto, AttributesProto = _build()
    cases = [
        (3, {"requestId": "abc"}, b"hi", "OK"),
        (0, {}, b"", ""),
        (1, {"task_id": "job_001", "requestId": "r-1", "lastCode": "500"}, b'{"images": []}', ""),
        ((1 << 64) - 1, {"任务": "猫 🐱", "": "empty key", "empty value": ""}, bytes(range(256)) * 300, "ça va"),
        (128, {"a": "b"}, b"", ""),
    ]
    for index, tags, data, message in cases:
        ours = frames.encode_frame(index, tags, data, message)
        parsed = DataFrameProto.FromString(ours)
        assert (parsed.index, dict(parsed.tags), parsed.data, parsed.message) == (index, tags, data, message)
        theirs = DataFrameProto(index=index, tags=tags, data=data, message=message).SerializeToString()
        assert theirs == ours, (theirs[:80].hex(), ours[:80].hex())
        assert frames.decode_frame(theirs) == (index, tags, data, message)
    assert DataFrameProto(index=3, tags={"requestId": "abc"}, data=b"hi", message="OK").SerializeToString() == (
        bytes.fromhex("0803 1210 0a09") + b"requestId" + bytes.fromhex("1203") + b"abc"
        + bytes.fromhex("1a02") + b"hi" + bytes.fromhex("2202") + b"OK"
    )

    ours = frames.encode_frame_list(cases)
    parsed = DataFrameListProto.FromString(ours)
    assert [(f.index, dict(f.tags), f.data, f.message) for f in parsed.index] == cases
    theirs = DataFrameListProto(index=[DataFrameProto(index=i, tags=t, data=d, message=m) for i, t, d, m in cases])
    assert theirs.SerializeToString() == ours
    assert frames.decode_frame_list(theirs.SerializeToString()) == cases
    assert len(DataFrameListProto.FromString(b"").index) == 0 and frames.encode_frame_list([]) == b""

    attributes = {"meta.name": "svc/sink", "stream.length": "0", "meta.maxPayloadBytes": "8192"}
    ours = frames.encode_attributes(attributes)
    assert dict(AttributesProto.FromString(ours).attributes) == attributes
    assert AttributesProto(attributes=attributes).SerializeToString() == ours
    assert frames.decode_attributes(AttributesProto(attributes=attributes).SerializeToString()) == attributes
    print(f"frames.py agrees with protobuf {google.protobuf.__version__} on {len(cases)} frames, a list and attributes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
