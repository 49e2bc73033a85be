"""Reads for jobs. Every read of a job goes through `job_get_for_user`."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db.models import QuerySet

from inference.models import Job, Worker
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
    """The job, or None for a job that does not exist or is not the user's to see (→ 404)."""
    return jobs_visible_to(user).select_related("owner", "worker").filter(public_id=public_id).first()


def job_list_for_user(user: AbstractUser, limit: int = 50) -> list[Job]:
    return list(Job.objects.filter(owner=user).order_by("-created_at")[:limit])


def worker_list() -> list[Worker]:
    return list(Worker.objects.order_by("name"))
