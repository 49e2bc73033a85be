"""Django admin for the EAS async services: each service with its endpoint and queue depths, its
tokens (issued once, shown once; revocable), created and owned by a tenant member."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from inference.eas.models import EasService, EasServiceToken
from inference.eas.queues import (
    INPUT,
    SINK,
    queue_depths,
    service_create,
    service_token_create,
    service_token_revoke,
)


class EasServiceTokenInline(admin.TabularInline):
    model = EasServiceToken
    extra = 0
    fields = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("name", "prefix", "created_at", "revoked_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # issued with the "Issue a new token" action: the raw token is shown once


@admin.register(EasService)
class EasServiceAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "tenant", "endpoint", "input_depth", "sink_depth", "default_checkpoint",
                    "created_at")
    list_filter = ("tenant",)
    search_fields = ("name", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("public_id", "tenant", "endpoint", "input_last_index", "sink_last_index", "created_at")
    fields = ("name", "owner", "tenant", "endpoint", "default_checkpoint", "max_payload_bytes", "max_queue_length",
              "max_sink_uncommitted", "result_retention_hours", "public_id", "input_last_index", "sink_last_index",
              "created_at")
    inlines = (EasServiceTokenInline,)
    actions = ("issue_token",)

    @admin.display(description="endpoint")
    def endpoint(self, service: EasService) -> str:
        return f"/api/predict/{service.name}  (sink: /api/predict/{service.name}/sink)"

    @admin.display(description="input queue")
    def input_depth(self, service: EasService) -> int:
        return queue_depths(service=service)[INPUT]

    @admin.display(description="sink queue")
    def sink_depth(self, service: EasService) -> int:
        return queue_depths(service=service)[SINK]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "name", "owner") if obj is not None else fields  # the SDK's queue name stays

    def save_model(self, request: HttpRequest, obj: EasService, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        try:
            service = service_create(
                name=obj.name, owner=obj.owner, default_checkpoint=obj.default_checkpoint,
                max_payload_bytes=obj.max_payload_bytes, max_queue_length=obj.max_queue_length,
                max_sink_uncommitted=obj.max_sink_uncommitted, result_retention_hours=obj.result_retention_hours,
            )
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            return
        obj.pk, obj.tenant = service.pk, service.tenant
        _, raw = service_token_create(service=service)
        self.message_user(request, f"Token for {service.name}: {raw} — copy it now, it is not shown again.",
                          messages.WARNING)

    @admin.action(description="Issue a new token")
    def issue_token(self, request: HttpRequest, queryset: QuerySet[EasService]) -> None:
        for service in queryset:
            _, raw = service_token_create(service=service, name="admin")
            self.message_user(request, f"Token for {service.name}: {raw} — copy it now, it is not shown again.",
                              messages.WARNING)


@admin.register(EasServiceToken)
class EasServiceTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "service", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("service__name", "name", "prefix")
    readonly_fields = ("service", "name", "prefix", "created_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued from the service's page (the raw token is shown once)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[EasServiceToken]) -> None:
        for token in queryset:
            service_token_revoke(token=token)
