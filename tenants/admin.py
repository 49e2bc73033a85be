"""Django admin for tenants, members and API tokens (operators use it to manage the platform)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from frontend.workspace.tab_ids import HIDEABLE_TABS, hidden_tab_ids
from tenants.models import ApiToken, Membership, PromptStyle, Tenant, UsageRecord
from tenants.services import token_create, token_revoke
from tenants.workdirs import workdir_ensure


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class TenantForm(forms.ModelForm):
    """The tenant, with its hidden workspace tabs as checkboxes (stored as a list of tab ids)."""

    hidden_workspace_tabs = forms.MultipleChoiceField(
        choices=[(tab, tab) for tab in HIDEABLE_TABS], required=False, widget=forms.CheckboxSelectMultiple,
        help_text=Tenant._meta.get_field("hidden_workspace_tabs").help_text,
    )

    class Meta:
        model = Tenant
        fields = "__all__"

    def clean_hidden_workspace_tabs(self) -> list[str]:
        return list(hidden_tab_ids(self.cleaned_data.get("hidden_workspace_tabs") or []))


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantForm
    list_display = ["slug", "name", "share_weight", "hidden_tabs", "member_count", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]

    @admin.display(description="hidden workspace tabs")
    def hidden_tabs(self, tenant: Tenant) -> str:
        return ", ".join(tenant.hidden_workspace_tabs or []) or "—"

    @admin.display(description="members")
    def member_count(self, tenant: Tenant) -> int:
        return tenant.memberships.count()

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        for membership in Membership.objects.filter(tenant=form.instance).select_related("user"):
            workdir_ensure(username=membership.user.username, tenant_slug=form.instance.slug)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["tenant", "role"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]

    def save_model(self, request: HttpRequest, obj: Membership, form, change) -> None:
        super().save_model(request, obj, form, change)
        workdir_ensure(username=obj.user.username, tenant_slug=obj.tenant.slug)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    autocomplete_fields = ["user"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = token_create(user=obj.user, name=obj.name)
        obj.pk = token.pk
        self.message_user(
            request, f"Token for {obj.user}: {raw} — copy it now, it is not shown again.", messages.WARNING
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset) -> None:
        for token in queryset:
            token_revoke(token=token)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["job", "user", "tenant", "gpu_seconds", "images", "status", "created_at"]
    list_filter = ["tenant", "status"]
    search_fields = ["user__username", "job__public_id"]
    date_hierarchy = "created_at"

    # Append-only for everyone, superusers included: records are written by the job lifecycle only
    # (a correction is a new adjusting record, never an edit). The admin shows them read-only.
    actions = None  # no "delete selected" either

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(PromptStyle)
class PromptStyleAdmin(admin.ModelAdmin):
    """Prompt styles: operators write the public ones and each team's; members' own styles (saved
    from the workspace) are listed too, for support. Scope and owner are checked by the model."""

    list_display = ["name", "scope", "tenant", "owner", "prompt", "negative_prompt", "updated_at"]
    list_filter = ["scope", "tenant"]
    search_fields = ["name", "prompt", "tenant__slug", "owner__username"]
    autocomplete_fields = ["tenant", "owner"]
    readonly_fields = ["public_id", "created_at", "updated_at"]
    fields = ["name", "scope", "tenant", "owner", "prompt", "negative_prompt", "public_id", "created_at", "updated_at"]
