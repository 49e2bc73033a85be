"""`/sdapi/v1/txt2img|img2img` with `script_name`: the script's cells as one job group, answered as A1111.

`a1111/scripts.py` plans the cells (pure); here they are submitted as one `JobGroup`
(`inference.job_groups.job_group_submit_cells`: all or none, each cell an ordinary job, the grid
stored when the last cell ends), the call waits for every cell as a plain txt2img waits for its
job, and the answer has A1111's shape: `images` = [the grid (where the script makes one), the
X/Y/Z sub-grids (`include_sub_grids`), then the cells' images], and `info` with `all_prompts`,
`all_seeds`, `infotexts`, … one per image (the grid takes its first cell's, as A1111 does).

A cell that failed or was cancelled leaves a blank tile in the grid and a note in `info`; if no
cell has an image the call fails as a plain generation does (500) or, all cancelled, answers
200 with no images.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from a1111.errors import RequestError, RequestValidationError
from a1111.generation import GenerationRequest, parse_generation_request
from a1111.pnginfo import PLATFORM_ZLIB_STRATEGY, png_bytes
from a1111.scripts import PlanContext, Script, ScriptPlan, find_script, plan_script
from a1111.xyz_grid import draw_grid
from inference.inputs.images import InputImages
from inference.job_groups import check_model_axes, grid_labels, job_group_state, job_group_submit_cells
from inference.limits import generation_limits, xyz_max_cells
from inference.models import Job, JobGroup
from inference.sdapi.adapter import SdapiError
from inference.sdapi.generate import (
    _info,
    _notes,
    _with_member_defaults,
    echo_parameters,
    read_job_images,
    style_names,
    wait_for_job,
)
from inference.storage import member_image_open


def _submit_plan(user, plan: ScriptPlan, inputs: InputImages | None) -> tuple[JobGroup, list[str]]:
    """The plan's cells as one group (all or none); errors name the script argument at fault."""
    try:
        if plan.plot is not None and plan.first_image_only:  # an X/Y/Z plot: its model axes first
            check_model_axes(user, plan.plot)
        group = job_group_submit_cells(user=user, cells=list(plan.cells), spec=plan.group_spec(), inputs=inputs)
    except RequestError as exc:
        if exc.field.startswith("xyz"):
            raise type(exc)(exc.message, field=plan.field_for(exc.field)) from None
        raise
    return group, list(group.jobs.order_by("group_index").values_list("public_id", flat=True))


def _plan(user, body: dict[str, Any], script: Script, generation: GenerationRequest) -> ScriptPlan:
    if generation.save_dir:
        raise RequestValidationError("alwayson_scripts.save_dir", "cannot be combined with script_name: leave one out")
    base = _with_member_defaults(user, generation)
    seed = body.get("seed", -1)
    context = PlanContext(limits=generation_limits(), max_cells=xyz_max_cells(), random_seed=seed in (-1, None, "-1"))
    return plan_script(script, body.get("script_args"), base, context)


def _sub_grids(plan: ScriptPlan, group: JobGroup, cells: list[Job]) -> list[str]:
    """X/Y/Z `include_sub_grids`: one grid per z value (base64 PNGs), drawn from the cells' images."""
    assert plan.plot is not None
    nx, ny, nz = plan.plot.shape
    labels = grid_labels(group.spec, plan.plot)
    grids = []
    for zi in range(nz):
        tiles = []
        for job in cells[zi * nx * ny:(zi + 1) * nx * ny]:
            ok = job.status == Job.Status.SUCCEEDED and job.outputs
            tiles.append(member_image_open(job.outputs[0]) if ok else None)
        if all(tile is None for tile in tiles):
            continue
        grid = draw_grid(tiles, (nx, ny, 1), (labels[0], labels[1], ("",)))
        infotext = next((job.infotexts[0] for job in cells[zi * nx * ny:] if job.infotexts), "")
        data = png_bytes(grid, infotext, compress_level=settings.ATELIER_PNG_COMPRESS_LEVEL, zlib_strategy=PLATFORM_ZLIB_STRATEGY)
        grids.append(base64.b64encode(data).decode())
    return grids


def _answer(plan: ScriptPlan, group: JobGroup, cells: list[Job], body: dict[str, Any], kind: str,
            generation: GenerationRequest) -> dict[str, Any]:
    done = [job for job in cells if job.status == Job.Status.SUCCEEDED and job.outputs]
    failed = [job for job in cells if job.status == Job.Status.FAILED]
    notes = _notes(body, generation)
    notes += [f"{plan.title}: image {job.group_index} failed: {job.error}" for job in failed]
    notes += [f"{plan.title}: image {job.group_index} was interrupted" for job in cells
              if job.status == Job.Status.CANCELLED]
    echo = echo_parameters(body, kind)
    if not done:
        if failed:
            raise SdapiError(500, f"{plan.title}: every image failed; the first: {failed[0].error}", "GenerationFailed")
        return {"images": [], "parameters": echo, "info": json.dumps({"notes": notes, "job_group": group.public_id})}
    first = done[0]
    images: list[str] = []  # base64, then per image: (prompt, negative prompt, seed, subseed, infotext)
    meta: list[tuple[str, str, int, int, str]] = []

    def cell_meta(job: Job, index: int) -> tuple[str, str, int, int, str]:
        params = job.params
        step = 0 if params["subseed_strength"] > 0 else 1
        return (params["prompt"], params["negative_prompt"], job.seeds[index], params["subseed"] + index * step,
                job.infotexts[index] if index < len(job.infotexts) else "")

    send = body.get("send_images", True) is not False
    if plan.plot is not None and group.grid_output:
        if send:
            images += read_job_images(first, [group.grid_output])
        meta.append(cell_meta(first, 0))
        if plan.include_sub_grids:
            sub_grids = _sub_grids(plan, group, cells)
            images += sub_grids if send else []
            meta += [cell_meta(first, 0)] * len(sub_grids)
    if plan.include_cells:
        for job in done:
            count = 1 if plan.first_image_only else len(job.outputs)
            if send:
                images += read_job_images(job, list(job.outputs[:count]))
            meta += [cell_meta(job, index) for index in range(count)]
    info = json.loads(_info(first, notes, style_names(body)))
    prompts, negatives, seeds, subseeds, infotexts = (list(column) for column in zip(*meta, strict=True)) \
        if meta else ([], [], [], [], [])
    info.update({
        "all_prompts": prompts, "all_negative_prompts": negatives, "all_seeds": seeds, "all_subseeds": subseeds,
        "infotexts": infotexts, "index_of_first_image": 1 if plan.plot is not None and group.grid_output else 0,
        "job_group": group.public_id, "script": plan.title,
    })
    return {"images": images, "parameters": echo, "info": json.dumps(info)}


def submit_script(user, body: dict[str, Any], script: Script, generation: GenerationRequest, inputs: InputImages | None) -> JobGroup:
    """The script's cells as one group (the EAS queue's path: its result is written when the group settles)."""
    plan = _plan(user, body, script, generation)
    return _submit_plan(user, plan, inputs)[0]


def script_answer(user, body: dict[str, Any], kind: str, group: JobGroup, cells: list[Job]) -> dict[str, Any]:
    """`/sdapi/v1`'s answer for a settled script group submitted from `body` (re-planned from the
    body's fields: the plan's title, axes and options are what the answer needs; the images, seeds
    and texts come from the cells)."""
    script = find_script(body.get("script_name"))
    assert script is not None
    generation = parse_generation_request({**body, "kind": kind}, limits=generation_limits(), lenient_sampler=True)
    return _answer(_plan(user, body, script, generation), group, cells, body, kind, generation)


async def run_script(
    user, body: dict[str, Any], kind: str, script: Script, generation: GenerationRequest, inputs: InputImages | None
) -> dict[str, Any]:
    """Plan, submit as one group, wait for every cell, answer as A1111 (see the module's docstring)."""
    plan = await sync_to_async(_plan)(user, body, script, generation)
    group, job_ids = await sync_to_async(_submit_plan)(user, plan, inputs)
    for public_id in job_ids:
        await wait_for_job(public_id)
    state = await sync_to_async(job_group_state)(group=group)  # settles the grid if no worker did yet
    return await sync_to_async(_answer)(plan, state.group, state.cells, body, kind, generation)
