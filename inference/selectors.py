"""Reads for jobs and job groups. Every read of a job goes through `job_get_for_user`, of a group
through `job_group_get_for_user`."""

from __future__ import annotations

import copy

from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db.models import QuerySet

from a1111.options import A1111_OPTIONS
from inference.model_registry import PromptgenModelEntry
from inference.model_registry import promptgen_models_for_user as _promptgen_models_for_user
from inference.models import Job, JobGroup, UserOptions, Worker
from tenants.models import Membership


def jobs_visible_to(user: AbstractUser) -> QuerySet[Job]:
    """Owners see their jobs, tenant admins their tenant's, operators all."""
    if not user.is_authenticated:
        return Job.objects.none()
    if user.is_staff:
        return Job.objects.all()
    admin_of = Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values("tenant")
    return Job.objects.filter(owner=user) | Job.objects.filter(tenant__in=admin_of)


def job_get_for_user(user: AbstractUser, public_id: str) -> Job | None:
    """The job, or None for a job that does not exist or is not the user's to see (→ 404).

    The rule is `jobs_visible_to`'s, checked on the one row the unique `public_id` names: an
    owner's poll of their own job is one indexed query, where the OR of "mine" and "my tenant's"
    cost a subquery and an expensive query to build on every poll; only someone else's job asks
    whether the caller is its tenant's admin."""
    if not user.is_authenticated:
        return None
    job = next(iter(Job.objects.select_related("owner", "worker").filter(public_id=public_id).order_by()[:1]), None)
    if job is None or job.owner_id == user.pk or user.is_staff:
        return job
    admin_of_its_tenant = Membership.objects.filter(
        user=user, role=Membership.Role.ADMIN, tenant_id=job.tenant_id).exists()
    return job if admin_of_its_tenant else None


def job_group_get_for_user(user: AbstractUser, public_id: str) -> JobGroup | None:
    """The job group (an X/Y/Z plot), or None for one that does not exist or is not the user's to
    see (→ 404): owners see theirs, tenant admins their tenant's, operators all, as for jobs."""
    if not user.is_authenticated:
        return None
    groups = JobGroup.objects.select_related("owner").filter(public_id=public_id)
    if user.is_staff:
        return groups.first()
    admin_of = Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values("tenant")
    return (groups.filter(owner=user) | groups.filter(tenant__in=admin_of)).first()


def job_group_newest_active_for_owner(user: AbstractUser) -> JobGroup | None:
    """The user's own newest unfinished group: the plot a workspace reattaches to after a reload."""
    if not user.is_authenticated:
        return None
    return JobGroup.objects.filter(owner=user, finished_at__isnull=True).order_by("-created_at").first()


def job_member_params(job: Job) -> dict[str, Any]:
    """What a member may see of their own job's parameters (native API, workspace gallery): built
    by allow-list from the stored spec (`inference/jobspec.py`), so no server path, storage key or
    hash of a resolved model file reaches them, whatever the spec's version."""
    from a1111.extras import ExtrasRequest
    from inference.jobspec import member_params_from_json

    params = job.params if isinstance(job.params, dict) else {}
    if job.kind == Job.Kind.PROMPTGEN:
        from a1111.promptgen import PromptgenRequest

        shown = {name: params[name] for name in PromptgenRequest.__dataclass_fields__ if name in params}
        resolved = params.get("resolved_model")
        if isinstance(resolved, dict) and "title" in resolved:
            shown["model_title"] = resolved["title"]  # the title only: no key, no path
        return shown
    if job.kind == Job.Kind.INTERROGATE:  # the interrogator and the options it ran with: no model keys
        return {name: params[name] for name in ("model", "size", "settings") if name in params}
    if job.kind == Job.Kind.EXTRAS:
        shown = [name for name in ExtrasRequest.__dataclass_fields__ if name != "resolved_models"]
        return {name: params[name] for name in shown if name in params}
    return member_params_from_json(params)


def promptgen_models_for_user(user: AbstractUser) -> list[PromptgenModelEntry]:
    """The prompt-generation models the member may run (`.name`, `.title`, `.scope`, `.sha256`):
    their own first, then their team's, then the public ones; folders that cannot run are left out."""
    return _promptgen_models_for_user(user)


def jobs_active_for_owner(user: AbstractUser) -> list[Job]:
    """The user's own queued, dispatched and running jobs, oldest first."""
    return list(Job.objects.filter(owner=user, status__in=Job.ACTIVE).order_by("created_at"))


def job_for_client_task(user: AbstractUser, task_id: str) -> Job | None:
    """The user's own newest job submitted with this `force_task_id` (A1111's client-chosen id), or
    None; another member's job with the same id is never found (ids are the client's, not unique)."""
    return Job.objects.filter(owner=user, params__force_task_id=task_id).order_by("-created_at", "-pk").first()


def job_skips_requested(job: Job) -> int | None:
    """How many skips were asked for the job (`job_skip`): read by the worker running it; None when it is gone."""
    return Job.objects.filter(pk=job.pk).values_list("skip_requested", flat=True).first()


def job_newest_active_for_owner(user: AbstractUser, kind: str) -> Job | None:
    """The user's own newest queued, dispatched or running job of `kind`: the one a workspace
    tab reattaches to after a reload, and the one its Cancel stops. Never another user's."""
    if not user.is_authenticated:
        return None
    return Job.objects.filter(owner=user, kind=kind, status__in=Job.ACTIVE).order_by("-created_at").first()


def job_newest_finished_for_owner(user: AbstractUser, kind: str) -> Job | None:
    """The user's own newest finished (succeeded, failed or cancelled) job of `kind`: the last
    result a workspace tab shows. Never another user's."""
    if not user.is_authenticated:
        return None
    return Job.objects.filter(owner=user, kind=kind, status__in=Job.FINISHED).order_by("-created_at").first()


def job_list_for_user(user: AbstractUser, limit: int = 50) -> list[Job]:
    return list(Job.objects.filter(owner=user).order_by("-created_at")[:limit])


def worker_list() -> list[Worker]:
    return list(Worker.objects.order_by("name"))


# A1111 options a member may read and set; everything else in A1111's long list is global
# WebUI configuration that has no meaning per user here (and is ignored on POST, as A1111 does).
def user_options_get(user: AbstractUser) -> dict[str, object]:
    """The member's options: every key of A1111 1.10's options object (`a1111/options.py`) with
    A1111's defaults, overlaid with what they set; `sd_model_checkpoint` is the title of their
    checkpoint (their choice, else the default one) and `sd_checkpoint_hash` its SHA-256."""
    from inference.model_registry import ModelNotFound, checkpoint_resolve_for_user

    stored = UserOptions.objects.filter(user=user).values_list("values", flat=True).first() or {}
    options = {**copy.deepcopy(dict(A1111_OPTIONS)), **stored}
    try:
        checkpoint = checkpoint_resolve_for_user(user, options["sd_model_checkpoint"])  # type: ignore[arg-type]
    except ModelNotFound:  # their chosen model was removed, or none is installed
        checkpoint = None
    options["sd_model_checkpoint"] = checkpoint.title if checkpoint else None
    options["sd_checkpoint_hash"] = checkpoint.sha256 if checkpoint else None
    return options
