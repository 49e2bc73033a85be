"""The native job-groups API (`/api/v1/job-groups`): an X/Y/Z plot submitted, read and cancelled.

Thin adapters over `inference/job_groups.py`: the body is a txt2img request (A1111's fields, as
`POST /api/v1/jobs` takes) plus `xyz`, the axes (`a1111/xyz.py`). Each cell is an ordinary job
(`/api/v1/jobs/<id>` works for it); the group adds the cells' order, labels and the grid.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from a1111.errors import RequestValidationError
from a1111.generation import parse_generation_request
from a1111.xyz import AXIS_NAMES, XyzPlot, parse_xyz
from inference.api.errors import api_view, error, json_body
from inference.api.native import _png_response
from inference.events import job_event_payload
from inference.inputs.controlnet import with_controlnet_inputs
from inference.job_groups import GroupState, job_group_cancel, job_group_state, job_group_submit
from inference.limits import generation_limits, xyz_max_cells
from inference.selectors import job_group_get_for_user


def _not_found() -> JsonResponse:
    return error(404, "job group not found")


def job_group_json(state: GroupState) -> dict[str, Any]:
    group = state.group
    plot = XyzPlot.from_json(group.spec)
    return {
        "type": "job_group",
        "id": group.public_id,
        "kind": group.kind,
        "status": state.status,
        "cells": state.as_counts_json(),
        "axes": {
            name: {"type": axis.type.id, "values": list(axis.values), "labels": list(axis.labels)}
            for name, axis in zip(AXIS_NAMES, plot.axes, strict=True)
        },
        "jobs": [
            {**job_event_payload(job), "index": job.group_index, "seeds": job.seeds,
             "labels": list(plot.cell_labels(job.group_index or 0))}
            for job in state.cells
        ],
        "grid": f"/api/v1/job-groups/{group.public_id}/grid" if group.grid_output else None,
        "created_at": group.created_at.isoformat(),
        "finished_at": group.finished_at.isoformat() if group.finished_at else None,
    }


@api_view("POST")
def job_groups(request: HttpRequest, user) -> JsonResponse:
    body = json_body(request)
    if not isinstance(body, dict):
        raise RequestValidationError("body", "must be a JSON object")
    if "xyz" not in body:
        raise RequestValidationError("xyz", 'required: the axes, e.g. {"x": {"type": "seed", "values": "1-4"}}')
    if body.get("kind", "txt2img") != "txt2img":
        raise RequestValidationError("kind", "an X/Y/Z plot is txt2img only")
    limits = generation_limits()
    generation = parse_generation_request(body, limits=limits)
    plot = parse_xyz(body["xyz"], limits=limits, max_cells=xyz_max_cells())
    generation, inputs = with_controlnet_inputs(body, generation, None, fetcher_factory=None)
    group = job_group_submit(user=user, request=generation, plot=plot, inputs=inputs)
    return JsonResponse({"id": group.public_id, "cells": plot.cell_count, "status": "queued"}, status=201)


@api_view("GET")
def job_group_detail(request: HttpRequest, user, group_id: str) -> JsonResponse:
    group = job_group_get_for_user(user, group_id)
    if group is None:
        return _not_found()
    return JsonResponse(job_group_json(job_group_state(group=group)))


@api_view("POST")
def job_group_cancel_view(request: HttpRequest, user, group_id: str) -> JsonResponse:
    group = job_group_get_for_user(user, group_id)
    if group is None:
        return _not_found()
    job_group_cancel(group=group)
    return JsonResponse(job_group_json(job_group_state(group=group)))


@api_view("GET")
def job_group_grid(request: HttpRequest, user, group_id: str):
    group = job_group_get_for_user(user, group_id)
    if group is None:
        return _not_found()
    group = job_group_state(group=group).group
    if not group.grid_output:
        return error(404, f"job group {group_id} has no grid yet: it is made when every cell has ended")
    return _png_response(group.grid_output, what=f"the grid of job group {group_id}")
