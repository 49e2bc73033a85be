"""Django admin for jobs and workers: operators watch the queue and drain or disable workers."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.utils import timezone
from django.db.models import QuerySet
from django.http import HttpRequest

from inference.models import Job, Worker
from inference.services import job_cancel


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = [
        "name", "state", "device", "host", "pid", "last_heartbeat", "jobs_last_hour", "jobs_done",
        "loaded_models", "cached_models",
    ]
    list_filter = ["state"]
    readonly_fields = [f.name for f in Worker._meta.fields if f.name != "state"]
    actions = ["drain", "disable", "enable"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # workers register themselves

    @admin.display(description="jobs in the last hour")
    def jobs_last_hour(self, worker: Worker) -> int:
        since = timezone.now() - timedelta(hours=1)
        return worker.jobs.filter(status=Job.Status.SUCCEEDED, finished_at__gte=since).count()

    @admin.action(description="Drain: finish current jobs, take no new ones")
    def drain(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        queryset.update(state=Worker.State.DRAINING)

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        queryset.update(state=Worker.State.DISABLED)

    @admin.action(description="Enable (back online)")
    def enable(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        queryset.update(state=Worker.State.ONLINE)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "public_id", "owner", "tenant", "kind", "status", "progress", "attempts", "worker", "batch_id", "created_at",
    ]
    list_filter = ["status", "kind", "tenant"]
    search_fields = ["public_id", "owner__username"]
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ["cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs come in through the APIs

    @admin.action(description="Cancel selected jobs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            job_cancel(job=job)


import inference.eas.admin  # noqa: F401  (the EAS services' pages)
