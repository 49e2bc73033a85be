"""Input items → Jobs → sink results: how the platform consumes an EAS service's input queue.

* **The pump** (`eas_pump`) submits waiting input items, highest `_priority_` first, then in index
  order, through the same parse path as `/sdapi/v1/txt2img|img2img` (`inference.sdapi.generate`)
  and `job_submit`, as the service's owner: quotas, the scheduler and billing are shared with
  every other path. It runs after each put, after commits, deletes and truncates of the sink, and
  in the sweeper's pass (`eas_sweep`).
* **Back-pressure**: an item stays waiting while the sink holds `max_sink_uncommitted` results
  (counting the submitted items whose results will land there), and while the owner has the most
  queued jobs `ATELIER_MAX_QUEUED_JOBS_PER_USER` allows: it waits instead of failing.
* **Results** (`eas_job_finished`, called where a job ends: `inference/transitions.py`,
  `job_cancel`, `requeue_or_fail`): one sink item per input item, tags = the input's tags (with
  `requestId`) plus `lastCode` on failure, data = the JSON `/sdapi/v1/<route>` would answer, with
  PAI's `parameters.status`, `image_url`, `seed`, `error_msg`, `total_time` and `id_task`.
  A body that is not JSON or not a valid request gets a result too (`status` 1 and `error_msg`):
  nothing is dropped silently. A body naming a group script (`script_name`: X/Y/Z plot, prompt
  matrix, prompts from file) runs as one job group, as on `/sdapi/v1`, and its result
  (`eas_group_finished`: the grid, then the cells' images) is written once the group has settled.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from a1111.errors import RequestError
from a1111.scripts import check_alwayson_scripts, check_script_args, find_script
from inference.api.errors import JsonBodyError, error_answer, parse_json
from inference.eas.models import EasItem, EasService
from inference.eas.queues import INPUT, SINK, queues_expire, result_append
from inference.models import Job, JobGroup
from inference.services import TooManyQueuedJobs

logger = logging.getLogger(__name__)

ROUTES = {"": "txt2img", "sdapi/v1/txt2img": "txt2img", "sdapi/v1/img2img": "img2img"}


# --- results ----------------------------------------------------------------------------------------


def _failure_body(body: Any, message: str, elapsed: float) -> dict[str, Any]:
    alwayson = body.get("alwayson_scripts") if isinstance(body, dict) else None
    id_task = alwayson.get("id_task", "") if isinstance(alwayson, dict) else ""
    return {
        "images": [],
        "parameters": {
            "id_task": str(id_task), "status": 1, "image_url": "", "seed": "", "error_msg": message,
            "total_time": round(elapsed, 2),
        },
        "info": "",
    }


def _elapsed(item: EasItem) -> float:
    return max((timezone.now() - item.created_at).total_seconds(), 0.0)


def _write_result(item: EasItem, status: int, result: dict[str, Any]) -> bool:
    """The sink result of `item`, once (a compare-and-set on the input item), which then leaves
    the input queue. False when another caller wrote it first."""
    service = item.service
    data = json.dumps(result).encode()
    if len(data) > service.max_payload_bytes:
        status = 413
        id_task = (result.get("parameters") or {}).get("id_task", "")
        data = json.dumps(_failure_body(
            {"alwayson_scripts": {"id_task": id_task}},
            f"the result is {len(data)} bytes, over this service's limit of {service.max_payload_bytes} bytes: "
            "ask for alwayson_scripts.save_dir so results carry image URLs instead of images",
            _elapsed(item),
        )).encode()
    tags = dict(item.tags)
    tags.setdefault("requestId", item.request_id)
    if status != 200:
        tags["lastCode"] = str(status)
    with transaction.atomic():
        claimed = EasItem.objects.filter(pk=item.pk, status__in=[EasItem.Status.WAITING, EasItem.Status.SUBMITTED])
        if not claimed.update(status=EasItem.Status.DONE):
            return False
        result_append(service=service, data=data, tags=tags, request_id=item.request_id)
        EasItem.objects.filter(pk=item.pk).delete()
    return True


def _fail_item(item: EasItem, status: int, message: str, body: Any = None) -> None:
    _write_result(item, status, _failure_body(body, message, _elapsed(item)))


def eas_job_finished(job: Job) -> bool:
    """Write the sink result of the input item `job` ran, if any. True when one was written."""
    item = (
        EasItem.objects.select_related("service", "service__owner")
        .filter(queue=INPUT, job=job, status=EasItem.Status.SUBMITTED)
        .first()
    )
    if item is None:
        return False
    from inference.sdapi.generate import finished_job_response

    body = json.loads(bytes(item.data))  # it parsed when it was submitted
    base_url = item.base_url.rstrip("/")
    try:
        status, result = finished_job_response(
            job, body, job.kind, absolute=lambda path: base_url + path, elapsed=_elapsed(item)
        )
    except Exception as exc:
        logger.exception("EAS result of job %s", job.public_id)
        status, result = 500, _failure_body(body, f"the result could not be read: {exc}", _elapsed(item))
    # No pump here: a result takes the sink room its submitted item held (see `_sink_room`);
    # room appears when results are committed, and the queued-jobs cap eases in the sweeper's pass.
    return _write_result(item, status, result)


def eas_group_finished(group: JobGroup) -> bool:
    """Write the sink result of the input item whose script ran as `group` (settled: every cell
    ended, the grid stored), answered as `/sdapi/v1` answers the script. True when one was written."""
    item = (
        EasItem.objects.select_related("service", "service__owner")
        .filter(queue=INPUT, job_group=group, status=EasItem.Status.SUBMITTED)
        .first()
    )
    if item is None or group.finished_at is None:
        return False
    from inference.job_groups import job_group_state
    from inference.sdapi.adapter import SdapiError
    from inference.sdapi.scripts import script_answer

    body = json.loads(bytes(item.data))  # it parsed and planned when it was submitted
    kind = ROUTES.get(item.route.strip("/"), "txt2img")
    state = job_group_state(group=group)
    try:
        status, result = 200, script_answer(item.service.owner, body, kind, state.group, state.cells)
    except SdapiError as exc:  # every cell failed: A1111's 500, as the synchronous call answers
        status, result = exc.status, _failure_body(body, exc.detail, _elapsed(item))
    except Exception as exc:
        logger.exception("EAS result of job group %s", group.public_id)
        status, result = 500, _failure_body(body, f"the result could not be read: {exc}", _elapsed(item))
    return _write_result(item, status, result)


def eas_group_finished_safely(group: JobGroup) -> None:
    """As `eas_job_finished_safely`, for a script's group (the sweeper retries a missed one)."""
    try:
        eas_group_finished(group)
    except Exception:
        logger.exception("could not write the EAS result of job group %s; the sweeper will retry", group.public_id)


def eas_job_finished_safely(job: Job) -> None:
    """For the places a job ends: a failure here must not undo the job's own transition (the
    sweeper's pass writes a missed result later, see `eas_sweep`)."""
    try:
        eas_job_finished(job)
    except Exception:
        logger.exception("could not write the EAS result of job %s; the sweeper will retry", job.public_id)


# --- the pump -----------------------------------------------------------------------------------------


def _sink_room(service: EasService) -> int:
    held = EasItem.objects.filter(service=service).filter(
        Q(queue=SINK) | Q(queue=INPUT, status=EasItem.Status.SUBMITTED)
    ).count()
    return service.max_sink_uncommitted - held


def _submit(item: EasItem) -> bool:
    """Submit one input item as a Job (or write its failure result). False: it must wait (the
    owner's queued-jobs cap)."""
    from inference.sdapi.adapter import SdapiError
    from inference.sdapi.generate import member_settings, parse_generation_body, styles_for_body, submit_generation
    from inference.sdapi.scripts import submit_script

    service = item.service
    kind = ROUTES.get(item.route.strip("/"))
    if kind is None:
        _fail_item(item, 404, f"route {item.route!r} is not served: put to <service>/sdapi/v1/txt2img or /sdapi/v1/img2img")
        return True
    try:
        body = parse_json(bytes(item.data))
    except JsonBodyError as exc:
        _fail_item(item, 422, f"body: {exc.message}")
        return True
    if not isinstance(body, dict):
        _fail_item(item, 422, "body: a JSON object is required")
        return True
    try:
        settings = member_settings(service.owner)
        if service.default_checkpoint:  # the service's model comes before its owner's option
            settings["sd_model_checkpoint"] = service.default_checkpoint
        script = find_script(body.get("script_name"))  # an unknown one is a 422, as on /sdapi/v1
        check_script_args(body.get("script_args"))
        check_alwayson_scripts(body.get("alwayson_scripts"))
        generation, inputs = parse_generation_body(body, kind, styles_for_body(service.owner, body), settings)
        with transaction.atomic():
            if script is not None:  # its cells as one job group; the result once the group settles
                group = submit_script(service.owner, body, script, generation, inputs)
                EasItem.objects.filter(pk=item.pk).update(status=EasItem.Status.SUBMITTED, job_group=group)
            else:
                job = submit_generation(service.owner, generation, inputs, priority=item.priority)
                EasItem.objects.filter(pk=item.pk).update(status=EasItem.Status.SUBMITTED, job=job)
    except TooManyQueuedJobs:
        return False
    except RequestError as exc:
        field = f"{exc.field}: " if exc.field and exc.field not in str(exc) else ""
        _fail_item(item, error_answer(exc).sdapi_status, f"{field}{exc}", body)
    except SdapiError as exc:
        _fail_item(item, exc.status, exc.detail, body)
    return True


def eas_pump(*, service_id: int | None = None) -> int:
    """Submit waiting input items while their service's sink has room. Returns how many left the
    waiting state (submitted, or answered with a failure result)."""
    services = EasService.objects.select_related("owner").filter(
        items__queue=INPUT, items__status=EasItem.Status.WAITING
    ).distinct()
    if service_id is not None:
        services = services.filter(pk=service_id)
    moved = 0
    for service in services:
        while _sink_room(service) > 0:
            with transaction.atomic():
                item = (
                    EasItem.objects.filter(service=service, queue=INPUT, status=EasItem.Status.WAITING)
                    .order_by("-priority", "index")
                    .select_for_update(skip_locked=True)
                    .first()
                )
                if item is None:
                    break
                item.service = service
                if not _submit(item):
                    break
            moved += 1
    return moved


def eas_pump_safely(*, service_id: int | None = None) -> None:
    """For callers that must not fail because of the pump (a put: the item is stored; a sweep
    comes by later)."""
    try:
        eas_pump(service_id=service_id)
    except Exception:
        logger.exception("EAS pump failed; the next sweep will retry")


def eas_sweep() -> None:
    """The sweeper's EAS pass: results missed for finished jobs, expired results and consumers,
    then the pump."""
    from inference.job_groups import job_group_settle

    submitted = EasItem.objects.filter(queue=INPUT, status=EasItem.Status.SUBMITTED)
    # a script's group whose cells have all ended (settled here if no cell's end did it)
    for item in submitted.filter(job_group__isnull=False).exclude(job_group__jobs__status__in=Job.ACTIVE).select_related("job_group"):
        assert item.job_group is not None
        eas_group_finished(job_group_settle(group=item.job_group))
    orphans = submitted.filter(job_group__isnull=True).filter(
        Q(job__isnull=True) | Q(job__status__in=Job.FINISHED)
    ).select_related("job", "service")
    for item in orphans:
        if item.job is None:
            _fail_item(item, 500, "its job was removed before it finished")
        else:
            eas_job_finished(item.job)
    queues_expire()
    eas_pump()


def eas_sweep_safely() -> None:
    try:
        eas_sweep()
    except Exception:
        logger.exception("EAS sweep failed; the next sweep will retry")
