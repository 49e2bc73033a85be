"""The EAS queue services (inference/eas/queues.py) and the job bridge (inference/eas/bridge.py)
over the real database: index sequences, delivery with windows, auto-commit, release and
redelivery, commit/delete/truncate, search, attributes, the command that creates a service; input
items run as the owner's jobs (really, in-process), results for successes, failures and bad
bodies, back-pressure, the queued-jobs cap and priority."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from inference.eas.bridge import eas_pump, eas_sweep
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
from inference.models import Job
from inference.services import job_cancel
from tenants.models import UsageRecord
from tests.security.conftest import run_on_a_worker


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


# --- the job bridge: input items → jobs → sink results ----------------------------------------------

TINY_BODY = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 7}


def _put(service: EasService, body, route: str = "sdapi/v1/txt2img", **tags: str) -> EasItem:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return queue_put(service=service, queue=INPUT, data=data, tags=tags, route=route, base_url="http://testserver/")


def _results(service: EasService) -> list[tuple[dict, dict]]:
    """(tags, JSON data) of every sink item, in index order."""
    return [(f.tags, json.loads(f.data)) for f in queue_get(service=service, queue=SINK, length=100, auto_delete=False)]


def _item(item: EasItem) -> EasItem | None:
    return EasItem.objects.filter(pk=item.pk).select_related("job").first()


@pytest.mark.django_db(transaction=True)
def test_a_put_request_runs_as_the_owners_job_and_its_result_lands_in_the_sink(service, tiny_checkpoint_path):
    body = {**TINY_BODY, "alwayson_scripts": {"id_task": "14837"}}
    item = _put(service, body, task_id="job_001")  # the put's own pump submits it (after commit)
    job = _item(item).job
    assert job is not None and job.owner == service.owner and _item(item).status == "submitted"
    assert _results(service) == []
    run_on_a_worker([job], name="eas-ok")
    assert job.status == "succeeded"
    [(tags, result)] = _results(service)
    assert tags == {"task_id": "job_001", "requestId": item.request_id}
    params = result["parameters"]
    assert params["status"] == 0 and params["error_msg"] == "" and params["id_task"] == "14837"
    assert params["seed"] == "7" and params["total_time"] >= 0
    assert params["image_url"] == f"http://testserver/api/v1/jobs/{job.public_id}/images/0"
    assert len(result["images"]) == 1 and json.loads(result["info"])["seed"] == 7
    assert _item(item) is None  # the request left the input queue with its result
    assert UsageRecord.objects.filter(job=job, user=service.owner).exists()  # billed to the owner


@pytest.mark.django_db(transaction=True)
def test_a_script_put_runs_as_one_job_group_and_its_result_is_the_grid_and_cells(service, tiny_checkpoint_path):
    """`script_name` through the queue, as on /sdapi/v1: the cells run as one group and the result,
    written when the last cell ends, holds the grid then the cells' images (issue 21)."""
    body = {**TINY_BODY, "script_name": "X/Y/Z plot", "script_args": [4, "1, 2", [], 0, "", [], 0, "", [], True, True]}
    item = _put(service, body, task_id="plot")
    group = EasItem.objects.get(pk=item.pk).job_group
    assert group is not None and _item(item).job is None and _item(item).status == "submitted"
    cells = list(group.jobs.order_by("group_index"))
    assert [cell.params["steps"] for cell in cells] == [1, 2]
    run_on_a_worker(cells[:1], name="eas-plot-1")
    eas_sweep()  # one cell still to run: nothing is written, the item stays submitted
    assert _results(service) == [] and _item(item).status == "submitted"
    run_on_a_worker(cells[1:], name="eas-plot-2")
    [(tags, result)] = _results(service)
    assert tags == {"task_id": "plot", "requestId": item.request_id}
    info = json.loads(result["info"])
    assert len(result["images"]) == 3 and info["script"] == "x/y/z plot" and info["job_group"] == group.public_id
    assert info["notes"] == [] and _item(item) is None
    unknown = _put(service, {**TINY_BODY, "script_name": "no such script"}, task_id="unknown")
    eas_pump()
    [(tags, failed)] = [(t, r) for t, r in _results(service) if t["task_id"] == "unknown"]
    assert tags["lastCode"] == "422" and "script 'no such script' not found" in failed["parameters"]["error_msg"]
    assert _item(unknown) is None


@pytest.mark.django_db(transaction=True)
def test_save_dir_results_carry_urls_and_no_images(service, tiny_checkpoint_path, settings):
    item = _put(service, {**TINY_BODY, "alwayson_scripts": {"save_dir": "eas-test/outputs"}})
    try:
        run_on_a_worker([_item(item).job], name="eas-save-dir")
    finally:
        shutil.rmtree(settings.DATA_DIR / "users" / "alice" / "eas-test", ignore_errors=True)
    [(_, result)] = _results(service)
    assert result["images"] == [] and result["parameters"]["status"] == 0
    assert result["parameters"]["image_url"].startswith("http://testserver/api/v1/jobs/")


@pytest.mark.django_db(transaction=True)
def test_a_job_that_fails_on_the_worker_gives_a_failed_result(service, tiny_checkpoint_path):
    doomed = tiny_checkpoint_path.parent / "doomed-eas.safetensors"
    shutil.copyfile(tiny_checkpoint_path, doomed)
    try:
        item = _put(service, {**TINY_BODY, "override_settings": {"sd_model_checkpoint": "doomed-eas"}}, task_id="t")
        job = _item(item).job
    finally:
        doomed.unlink()
    run_on_a_worker([job], name="eas-fail")
    assert job.status == "failed"
    [(tags, result)] = _results(service)
    assert tags["lastCode"] == "500" and tags["task_id"] == "t"
    assert result["parameters"]["status"] == 1 and result["parameters"]["error_msg"].startswith("generation failed")


@pytest.mark.parametrize(("body", "route", "code", "says"), [
    (b"{not json", "sdapi/v1/txt2img", "422", "body: is not valid JSON"),
    (b"[1, 2]", "sdapi/v1/txt2img", "422", "a JSON object is required"),
    ({**TINY_BODY, "steps": "many"}, "sdapi/v1/txt2img", "422", "steps"),
    ({**TINY_BODY, "override_settings": {"sd_model_checkpoint": "nope"}}, "sdapi/v1/txt2img", "404", "nope"),
    (TINY_BODY, "sdapi/v1/img2img", "404", "Init image not found"),
    (TINY_BODY, "sdapi/v1/options", "404", "route 'sdapi/v1/options' is not served"),
])
def test_bad_bodies_are_answered_by_a_failed_result_never_dropped(service, tiny_checkpoint_path, body, route, code, says):
    item = _put(service, body, route=route, task_id="bad")
    eas_pump()
    [(tags, result)] = _results(service)
    assert tags == {"task_id": "bad", "requestId": item.request_id, "lastCode": code}
    assert result["parameters"]["status"] == 1 and says in result["parameters"]["error_msg"]
    assert result["images"] == [] and _item(item) is None
    assert not Job.objects.exists()


def test_the_services_default_checkpoint_applies_when_the_body_names_none(personas, tiny_checkpoint_path):
    service = service_create(name="pinned", owner=personas["alice"], default_checkpoint="no-such-model")
    _put(service, TINY_BODY)
    named = _put(service, {**TINY_BODY, "alwayson_scripts": {"sd_model_checkpoint": tiny_checkpoint_path.name}})
    eas_pump()
    [(_, result)] = _results(service)  # the default was used, and it does not exist
    assert "no-such-model" in result["parameters"]["error_msg"]
    assert _item(named).job.checkpoint_title.startswith(tiny_checkpoint_path.stem)


def test_back_pressure_holds_input_items_until_results_are_committed(personas, tiny_checkpoint_path,
                                                                    django_capture_on_commit_callbacks):
    service = service_create(name="tight", owner=personas["alice"], max_sink_uncommitted=1)
    first, second = _put(service, TINY_BODY), _put(service, TINY_BODY)
    eas_pump()
    assert _item(first).status == "submitted" and _item(second).status == "waiting"
    job_cancel(job=_item(first).job)  # ends: its result takes the sink's one place
    [(_, result)] = _results(service)
    assert result["parameters"]["status"] == 1
    eas_pump()
    assert _item(second).status == "waiting"  # nobody collected the result yet
    assert queue_attributes(service=service, queue=INPUT)["stream.waiting"] == "1"
    [frame] = queue_deliver(service=service, queue=SINK, consumer="eas.u1", window=1, start_index=0, auto_commit=False)
    with django_capture_on_commit_callbacks(execute=True):
        queue_commit(service=service, queue=SINK, indexes=[frame.index])
    assert _item(second).status == "submitted"


def test_the_owners_queued_jobs_cap_makes_items_wait_and_priority_goes_first(service, tiny_checkpoint_path, settings):
    settings.ATELIER_MAX_QUEUED_JOBS_PER_USER = 1
    first = _put(service, TINY_BODY)
    eas_pump()
    plain = _put(service, TINY_BODY)
    urgent = queue_put(service=service, queue=INPUT, data=json.dumps(TINY_BODY).encode(), priority=1,
                       route="sdapi/v1/txt2img")
    eas_pump()
    assert [_item(i).status for i in (first, plain, urgent)] == ["submitted", "waiting", "waiting"]
    assert _results(service) == []  # waiting, not failed
    job_cancel(job=_item(first).job)
    eas_sweep()  # the sweeper's pass pumps
    assert _item(urgent).status == "submitted" and _item(urgent).job.priority == 1
    assert _item(plain).status == "waiting"


def test_search_on_the_input_queue_counts_the_requests_ahead(service, tiny_checkpoint_path, settings):
    settings.ATELIER_MAX_QUEUED_JOBS_PER_USER = 0
    items = [_put(service, TINY_BODY) for _ in range(3)]
    eas_pump()
    assert queue_search(service=service, queue=INPUT, index=items[2].index) == {
        "IsPending": False, "WaitHeadCount": 2, "Status": "waiting",
    }
    assert queue_search(service=service, queue=INPUT, index=999) == {}
    assert queue_delete(service=service, queue=INPUT, indexes=[items[0].index]) == 1  # not started: withdrawn


def test_the_sweeper_writes_a_result_missed_when_the_job_ended(service, tiny_checkpoint_path):
    item = _put(service, TINY_BODY, task_id="late")
    eas_pump()
    job = _item(item).job
    Job.objects.filter(pk=job.pk).update(status="cancelled")  # ended without the hook (a crash)
    assert _results(service) == []
    eas_sweep()
    [(tags, _)] = _results(service)
    assert tags["task_id"] == "late"
