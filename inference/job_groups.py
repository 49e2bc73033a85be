"""Job groups: work submitted as several ordinary jobs, an X/Y/Z plot's cells (services).

The `/sdapi` scripts (`a1111/scripts.py`: X/Y/Z plot, prompt matrix, prompts from file) submit
their prepared cells through `job_group_submit_cells`; their `spec` is a plot like the
workspace's plus `script`, and `grid: false` (no grid) or `legend: false` (no labels).

`job_group_submit` expands a txt2img request and its axes (`a1111/xyz.py`) into cells and submits
each through `job_submit`, so quotas, fair share and per-image usage apply to every cell as to any
job. It is all-or-nothing: the cells are created in one transaction, and a cell refused (a full
queue, a model the member may not use) rolls every cell back; the scheduler hears of them only
once they are committed. `job_group_cancel` cancels every unfinished cell.

The grid is assembled by `job_group_settle` once every cell has ended, exactly once: a
compare-and-set on `finished_at` (under the group's row lock) in the transaction that stores the
grid, so concurrent callers cannot store it twice and a failure leaves the group to be settled
again. It is called wherever a cell ends (`inference/endings.job_ended`: a worker's finish, a
cancel, the reaper's fail at the attempt cap) and, as a safety net for a settle that failed, on
read (`job_group_state`, used by the API and the workspace).

Reads: `inference/selectors.py` `job_group_get_for_user` (404 for anyone else).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.utils import timezone

from a1111.errors import RequestError, RequestValidationError
from a1111.generation import GenerationRequest
from a1111.pnginfo import PLATFORM_ZLIB_STRATEGY, png_bytes
from a1111.xyz import AXIS_NAMES, XyzPlot, expand_cells
from a1111.xyz_grid import draw_grid
from inference.dispatch_wake import dispatch_wake
from inference.inputs.images import InputImages
from inference.limits import generation_limits
from inference.model_registry import checkpoint_resolve_for_user, vae_resolve_for_user
from inference.models import Job, JobGroup
from inference.services import NotAMember, job_cancel, job_submit
from inference.storage import member_file_save, member_image_open
from tenants.selectors import tenant_for_user
from tenants.workdirs import user_outputs_key

logger = logging.getLogger(__name__)


def check_model_axes(user: AbstractUser, plot: XyzPlot) -> None:
    """Checkpoint and VAE values the member may use, refused naming their axis (before any cell)."""
    for name, axis in zip(AXIS_NAMES, plot.axes, strict=True):
        resolve = {"checkpoint": checkpoint_resolve_for_user, "vae": vae_resolve_for_user}.get(axis.type.id)
        for value in axis.values if resolve else ():
            try:
                resolve(user, value)
            except RequestError as exc:
                raise type(exc)(exc.message, field=f"xyz.{name}.values") from None


def job_group_submit(
    *, user: AbstractUser, request: GenerationRequest, plot: XyzPlot, inputs: InputImages | None = None
) -> JobGroup:
    """Queue an X/Y/Z plot: one ordinary job per cell (A1111's order), all or none.

    Raises what `job_submit` raises for a cell (a `RequestError`: `TooManyQueuedJobs` when the
    cells do not fit the member's queue, `ModelNotFound`, …) and `RequestValidationError` naming
    `xyz.<axis>.values` for an axis that does not apply to the request; nothing is queued then.
    """
    tenant = tenant_for_user(user)
    if tenant is None:
        raise NotAMember(f"{user.get_username()} is not a member of any tenant, so cannot generate")
    if request.kind != "txt2img":
        raise RequestValidationError("kind", "an X/Y/Z plot is txt2img only")
    cells = expand_cells(request, plot, generation_limits())
    check_model_axes(user, plot)
    return job_group_submit_cells(user=user, cells=[cell.request for cell in cells], spec=plot.to_json(), inputs=inputs)


def job_group_submit_cells(
    *, user: AbstractUser, cells: list[GenerationRequest], spec: dict[str, Any], inputs: InputImages | None = None
) -> JobGroup:
    """Queue prepared cells (txt2img or img2img) as one group, all or none: the plan of an
    `/sdapi` script (`a1111/scripts.py`). `spec` is the grid's plot (`XyzPlot.to_json`) plus,
    optionally, `script` (its name), `grid: false` (no grid) and `legend: false` (no labels)."""
    tenant = tenant_for_user(user)
    if tenant is None:
        raise NotAMember(f"{user.get_username()} is not a member of any tenant, so cannot generate")
    with transaction.atomic():
        group = JobGroup.objects.create(owner=user, tenant=tenant, kind=JobGroup.Kind.XYZ, spec=spec)
        for index, cell in enumerate(cells):
            job_submit(user=user, request=cell, inputs=inputs, group=group, group_index=index, dispatch=False)
        dispatch_wake()  # one wake (one scheduling pass) for every cell
    return group


def job_group_cancel(*, group: JobGroup) -> JobGroup:
    """Cancel every cell not yet ended (queued ones never start, running ones stop at their next step)."""
    for job in group.jobs.filter(status__in=Job.ACTIVE).order_by("group_index"):
        job_cancel(job=job)
    return job_group_settle(group=group)


def job_group_settle(*, group: JobGroup) -> JobGroup:
    """Once every cell has ended: store the grid (if any cell has an image) and set `finished_at`.

    Idempotent and exactly once (see the module's docstring); a group with cells still active
    is returned unchanged.
    """
    if group.finished_at is not None or group.jobs.filter(status__in=Job.ACTIVE).exists():
        return group
    with transaction.atomic():
        locked = JobGroup.objects.select_for_update().select_related("owner").get(pk=group.pk)
        if locked.finished_at is not None:
            return locked
        now = timezone.now()
        # The compare-and-set that makes this the one settling call (SQLite has no row locks).
        if not JobGroup.objects.filter(pk=locked.pk, finished_at__isnull=True).update(finished_at=now):
            locked.refresh_from_db()
            return locked
        cells = list(locked.jobs.order_by("group_index"))
        grid_key = _store_grid(locked, cells)
        JobGroup.objects.filter(pk=locked.pk).update(grid_output=grid_key)
    locked.refresh_from_db()
    return locked


def job_group_settle_safely(group_id: int) -> JobGroup | None:
    """`job_group_settle` where a cell ended: a failure is logged (a later read settles it). The
    group as it stands afterwards, or None (gone, or the settle failed)."""
    try:
        group = JobGroup.objects.filter(pk=group_id).first()
        return job_group_settle(group=group) if group is not None else None
    except Exception:  # noqa: BLE001 (the cell's own result is stored; the grid can be made later)
        logger.exception("job group %s: the grid could not be assembled now", group_id)
        return None


def _cell_image(job: Job):
    if job.status != Job.Status.SUCCEEDED or not job.outputs:
        return None
    try:
        return member_image_open(job.outputs[0])  # the cell's first image, as A1111's grid takes
    except FileNotFoundError:
        return None


def _store_grid(group: JobGroup, cells: list[Job]) -> str:
    """The grid PNG in the owner's outputs (with the first cell's infotext, as A1111 does); "" if
    no cell has an image."""
    if group.spec.get("grid") is False:  # a script without a grid (prompts from file)
        return ""
    plot = XyzPlot.from_json(group.spec)
    images = [_cell_image(job) for job in cells]
    if len(images) != plot.cell_count or all(image is None for image in images):
        return ""
    grid = draw_grid(images, plot.shape, grid_labels(group.spec, plot))
    infotext = next((job.infotexts[0] for job in cells if job.status == Job.Status.SUCCEEDED and job.infotexts), "")
    key = f"{user_outputs_key(group.owner.get_username())}/{group.created_at:%Y-%m-%d}/{group.public_id}-grid.png"
    data = png_bytes(grid, infotext, compress_level=settings.ATELIER_PNG_COMPRESS_LEVEL, zlib_strategy=PLATFORM_ZLIB_STRATEGY)
    return member_file_save(key, data)


def grid_labels(spec: dict[str, Any], plot: XyzPlot) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The labels the grid shows: the axes' own, or none where the plot asked for no legend."""
    if spec.get("legend") is False:
        return tuple(tuple("" for _ in axis.labels) for axis in plot.axes)  # type: ignore[return-value]
    return tuple(axis.labels for axis in plot.axes)  # type: ignore[return-value]


@dataclass(frozen=True)
class GroupState:
    """A group as its owner sees it: cells in order, counts, and its status."""

    group: JobGroup
    cells: list[Job]

    @property
    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in Job.Status.values}
        for job in self.cells:
            counts[job.status] += 1
        return counts

    @property
    def done(self) -> int:
        return sum(1 for job in self.cells if job.is_finished)

    @property
    def status(self) -> str:
        """queued (no cell started), running, or finished (every cell ended; `grid_output` set if any image)."""
        if self.group.finished_at is not None:
            return "finished"
        if all(job.status == Job.Status.QUEUED for job in self.cells):
            return "queued"
        return "running"

    def as_counts_json(self) -> dict[str, Any]:
        return {"total": len(self.cells), "done": self.done, **self.counts}


def job_group_state(*, group: JobGroup) -> GroupState:
    """The group with its cells, settled first if its last cell ended without settling it."""
    group = job_group_settle(group=group)
    return GroupState(group=group, cells=list(group.jobs.order_by("group_index")))
