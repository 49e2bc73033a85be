"""The EAS queue services (inference/eas/queues.py) over the real database: index sequences,
delivery with windows, auto-commit, release and redelivery, commit/delete/truncate, search,
attributes, and the command that creates a service."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from inference.eas.models import EasItem, EasService
from inference.eas.queues import (
    INPUT,
    SINK,
    EasAuthError,
    EasPayloadTooLarge,
    EasQueueFull,
    Frame,
    consumer_seen,
    queue_attributes,
    queue_commit,
    queue_delete,
    queue_deliver,
    queue_get,
    queue_put,
    queue_release,
    queue_search,
    queue_tail_index,
    queue_truncate,
    service_authenticate,
    service_create,
    service_token_create,
    service_token_revoke,
)


@pytest.fixture
def service(personas) -> EasService:
    return service_create(name="sd_async", owner=personas["alice"])


def _sink(service: EasService, count: int, **tags: str) -> list[EasItem]:
    return [queue_put(service=service, queue=SINK, data=f"r{i}".encode(), tags=tags) for i in range(count)]


def test_indexes_are_per_queue_from_one_and_never_reused(service):
    first = _sink(service, 3)
    assert [item.index for item in first] == [1, 2, 3]
    assert queue_truncate(service=service, queue=SINK, index=4) == 3
    assert queue_put(service=service, queue=SINK, data=b"x").index == 4
    other = service_create(name="other.svc", owner=service.owner)
    assert queue_put(service=other, queue=SINK, data=b"x").index == 1
    assert queue_tail_index(service=service, queue=SINK) == 5
    assert queue_tail_index(service=service, queue=INPUT) == 1


def test_put_adds_request_id_and_keeps_tags(service):
    item = queue_put(service=service, queue=SINK, data=b"hi", tags={"task_id": "job_001"})
    assert item.tags == {"task_id": "job_001", "requestId": item.request_id}
    [frame] = queue_get(service=service, queue=SINK, request_id=item.request_id)
    assert frame == Frame(index=item.index, tags=item.tags, data=b"hi")


def test_authenticate_accepts_raw_and_bearer_tokens_of_its_own_service_only(service, personas):
    token, raw = service_token_create(service=service)
    other = service_create(name="bobs", owner=personas["bob"])
    _, other_raw = service_token_create(service=other)
    assert service_authenticate(name="sd_async", authorization=raw) == service
    assert service_authenticate(name="sd_async", authorization=f"Bearer {raw}") == service
    for name, header in (("sd_async", other_raw), ("sd_async", ""), ("nope", raw), ("sd_async", raw + "x")):
        with pytest.raises(EasAuthError):
            service_authenticate(name=name, authorization=header)
    service_token_revoke(token=token)
    with pytest.raises(EasAuthError):
        service_authenticate(name="sd_async", authorization=raw)


def test_window_limits_uncommitted_items_and_commit_releases_the_next(service):
    _sink(service, 5)
    got = queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=2, start_index=0, auto_commit=False)
    assert [f.index for f in got] == [1, 2]
    assert queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=2, start_index=0, auto_commit=False) == []
    # another consumer of the group gets the next ones, never the same
    other = queue_deliver(service=service, queue=SINK, consumer="eas.u2", window=1, start_index=0, auto_commit=False)
    assert [f.index for f in other] == [3]
    assert queue_commit(service=service, queue=SINK, indexes=[1]) == 1
    again = queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=2, start_index=0, auto_commit=False)
    assert [f.index for f in again] == [4]


def test_auto_commit_removes_items_as_delivered(service):
    _sink(service, 3)
    got = queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=5, start_index=0, auto_commit=True)
    assert [f.index for f in got] == [1, 2, 3]
    assert queue_attributes(service=service, queue=SINK)["stream.length"] == "0"


def test_start_index_skips_older_items(service):
    _sink(service, 4)
    got = queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=5, start_index=3, auto_commit=False)
    assert [f.index for f in got] == [3, 4]


def test_release_redelivers_uncommitted_items_to_the_next_consumer(service):
    _sink(service, 3)
    queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=3, start_index=0, auto_commit=False)
    queue_commit(service=service, queue=SINK, indexes=[1])
    assert queue_release(service=service, queue=SINK, consumer="eas.u1") == 2
    got = queue_deliver(service=service, queue=SINK, consumer="eas.u2", window=5, start_index=0, auto_commit=False)
    assert [f.index for f in got] == [2, 3]


def test_delete_truncate_and_unknown_indexes(service):
    _sink(service, 5)
    assert queue_delete(service=service, queue=SINK, indexes=[2, 99]) == 1
    assert queue_truncate(service=service, queue=SINK, index=4) == 2  # 1 and 3
    assert queue_commit(service=service, queue=SINK, indexes=[12345]) == 0
    assert [f.index for f in queue_get(service=service, queue=SINK, length=10)] == [4, 5]


def test_get_filters_by_tags_and_auto_deletes(service):
    _sink(service, 2, task_id="a")
    _sink(service, 1, task_id="b")
    frames = queue_get(service=service, queue=SINK, tags={"task_id": "b"}, length=5)
    assert [f.tags["task_id"] for f in frames] == ["b"]
    assert queue_get(service=service, queue=SINK, tags={"task_id": "b"}) == []  # deleted when read
    kept = queue_get(service=service, queue=SINK, length=5, auto_delete=False, consumer="eas.u9")
    assert [f.index for f in kept] == [1, 2]
    # held by eas.u9 now: another consumer does not see them
    assert queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=5, start_index=0, auto_commit=False) == []
    assert queue_get(service=service, queue=SINK, index=999) == []


def test_attributes_show_stream_and_consumer_counters(service):
    _sink(service, 3)
    consumer_seen(service=service, queue=SINK, consumer="eas.u1", window=5, auto_commit=False, connected=True)
    queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=5, start_index=0, auto_commit=False)
    attrs = queue_attributes(service=service, queue=SINK)
    assert attrs["meta.name"] == "sd_async/sink"
    assert attrs["stream.length"] == "3" and attrs["stream.firstEntry"] == "1" and attrs["stream.lastEntry"] == "3"
    assert attrs["consumers.list.[0].id"] == "eas.u1"
    assert attrs["consumers.list.[0].pending"] == "3" and attrs["consumers.list.[0].window"] == "5"
    assert "Slots: 2" in attrs["consumers.list.[0]"]
    assert all(isinstance(v, str) for v in attrs.values())
    consumer_seen(service=service, queue=SINK, consumer="eas.u1", window=5, auto_commit=False, connected=False)
    assert queue_attributes(service=service, queue=SINK)["consumers.list.[0].status"] == "Exit"
    empty = queue_attributes(service=service, queue=INPUT)
    assert empty["stream.length"] == "0" and "stream.lastEntry" not in empty


def test_search_gives_the_queue_position_or_nothing(service):
    _sink(service, 3)
    assert queue_search(service=service, queue=SINK, index=3) == {"IsPending": False, "WaitHeadCount": 2}
    queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=1, start_index=0, auto_commit=False)
    assert queue_search(service=service, queue=SINK, index=1)["IsPending"] is True
    assert queue_search(service=service, queue=SINK, index=3)["WaitHeadCount"] == 1
    assert queue_search(service=service, queue=SINK, index=77) == {}


def test_payload_and_queue_length_limits(personas):
    service = service_create(name="small", owner=personas["alice"], max_payload_bytes=10, max_queue_length=2)
    with pytest.raises(EasPayloadTooLarge):
        queue_put(service=service, queue=SINK, data=b"x" * 11)
    _sink(service, 2)
    with pytest.raises(EasQueueFull):
        queue_put(service=service, queue=SINK, data=b"x")


def test_service_names_and_owners_are_checked(personas):
    with pytest.raises(ValidationError) as bad:
        service_create(name="../x", owner=personas["alice"])
    assert "name" in bad.value.message_dict
    service_create(name="taken", owner=personas["alice"])
    with pytest.raises(ValidationError):
        service_create(name="taken", owner=personas["bob"])
    with pytest.raises(ValidationError) as outsider:
        service_create(name="ops", owner=personas["admin"])  # an operator belongs to no tenant
    assert "owner" in outsider.value.message_dict


def test_input_queue_is_not_delivered_to_outside_consumers(service):
    queue_put(service=service, queue=INPUT, data=b"{}", route="sdapi/v1/txt2img")
    assert queue_deliver(service=service, queue=INPUT, consumer="eas.u1", window=5, start_index=0, auto_commit=True) == []


def test_create_eas_service_command_prints_endpoint_and_a_working_token(personas):
    out = io.StringIO()
    call_command("create_eas_service", "cmd_svc", "--owner", "alice", stdout=out)
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines())
    assert lines["endpoint"] and lines["sink queue"] == "cmd_svc/sink"
    assert service_authenticate(name="cmd_svc", authorization=lines["token"]).owner == personas["alice"]
