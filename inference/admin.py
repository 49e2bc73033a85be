"""Django admin for jobs, workers and model downloads: operators watch the queue, drain or
disable workers, and register models by URL (the ModelZoo, `inference/model_downloads.py`)."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.db.models import QuerySet
from django.http import HttpRequest

from a1111.errors import RequestError
from inference.model_downloads import download_kinds, model_download_cancel, model_download_check, model_download_retry
from inference.models import Job, ModelDownload, Worker
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
        "public_id", "owner", "tenant", "kind", "status", "progress", "attempts", "attempts_started", "worker", "batch_id", "created_at",
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


class ModelDownloadForm(forms.ModelForm):
    """Registering a download: the fields an operator gives, checked as `model_download_register` checks them."""

    kind = forms.ChoiceField(choices=[])

    class Meta:
        model = ModelDownload
        fields = ["url", "area", "tenant", "kind", "file_name", "sha256"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "kind" in self.fields:  # the change form shows a registered download read-only
            self.fields["kind"].choices = [(kind, kind) for kind in download_kinds()]

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        download = ModelDownload(**{name: cleaned.get(name) for name in self.Meta.fields})
        download.sha256 = download.sha256 or ""
        try:
            model_download_check(actor=self.request_user, download=download)
        except RequestError as exc:
            field = exc.field if exc.field in self.fields else None
            raise ValidationError({field: exc.message} if field else exc.message) from None
        cleaned["sha256"] = download.sha256
        return cleaned


@admin.register(ModelDownload)
class ModelDownloadAdmin(admin.ModelAdmin):
    """Register a model by URL; watch its progress; retry a failed one or cancel one."""

    form = ModelDownloadForm
    list_display = ["file_name", "kind", "area", "tenant", "state", "progress", "short_error", "created_by",
                    "created_at"]
    list_filter = ["state", "area", "kind"]
    search_fields = ["file_name", "url", "public_id"]
    actions = ["retry", "cancel"]

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request_user = request.user
        return form

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        if obj is None:
            return []
        return [f.name for f in ModelDownload._meta.fields]  # a registered download changes only by its actions

    def get_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ModelDownloadForm.Meta.fields
        return [f.name for f in ModelDownload._meta.fields if f.name != "id"]

    def save_model(self, request: HttpRequest, obj: ModelDownload, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
            obj.state = ModelDownload.State.QUEUED
        super().save_model(request, obj, form, change)

    @admin.display(description="progress")
    def progress(self, download: ModelDownload) -> str:
        done = _megabytes(download.bytes_done)
        if download.bytes_total:
            return f"{done} of {_megabytes(download.bytes_total)} ({100 * download.bytes_done // download.bytes_total}%)"
        return done

    @admin.display(description="error")
    def short_error(self, download: ModelDownload) -> str:
        return download.error[:120]

    @admin.action(description="Retry (resumes where a broken connection stopped)")
    def retry(self, request: HttpRequest, queryset: QuerySet[ModelDownload]) -> None:
        queued = sum(model_download_retry(download=download) for download in queryset)
        self.message_user(request, f"{queued} download(s) queued again (only failed or cancelled ones are retried).",
                          messages.INFO)

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet[ModelDownload]) -> None:
        for download in queryset:
            model_download_cancel(download=download)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB"


import inference.eas.admin  # noqa: F401  (the EAS services' pages)
