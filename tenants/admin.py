"""Django admin for tenants, members and API tokens (operators use it to manage the platform)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from a1111.errors import RequestError

from frontend.workspace.tab_ids import HIDEABLE_TABS, hidden_tab_ids
from tenants.models import ApiToken, Membership, PromptStyle, Tenant, UsageRecord
from tenants.exports import FORMATS, UsagePeriod, UsageScope, export_filename, record_chunks, statement_chunks, usage_records
from tenants.money import InvalidPeriod, parse_month
from tenants.services import ADJUSTMENT_REASON_MAX, token_create, token_revoke, usage_adjust
from tenants.statements import statement_for
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


class UsageExportForm(forms.Form):
    month = forms.CharField(max_length=7, help_text="YYYY-MM, in each tenant's time zone")
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.all(), required=False, empty_label="every tenant",
                                    to_field_name="slug")
    format = forms.ChoiceField(choices=[(fmt, fmt.upper()) for fmt in FORMATS], initial="csv")
    statement = forms.BooleanField(required=False, help_text="the tenant's statement instead of its records")

    def clean_month(self) -> str:
        try:
            year, number = parse_month(self.cleaned_data["month"])
        except InvalidPeriod as exc:
            raise forms.ValidationError(str(exc)) from None
        return f"{year:04d}-{number:02d}"

    def clean(self):
        data = super().clean()
        if data.get("statement") and not data.get("tenant"):
            self.add_error("tenant", "a statement is one tenant's: choose it")
        return data


class UsageAdjustmentForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.all())
    member = forms.ModelChoiceField(queryset=get_user_model().objects.filter(membership__isnull=False)
                                    .order_by("username"), to_field_name="username")
    gpu_seconds = forms.FloatField(initial=0, help_text="GPU-seconds to add (negative: to take off)")
    images = forms.IntegerField(initial=0, help_text="Images to add (negative: to take off)")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=ADJUSTMENT_REASON_MAX)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """Usage records, read-only, with two operator views of their own: "Export usage" (a month's
    records or a tenant's statement, as the API writes them) and "Add adjustment" (a correction as a
    new adjusting record through `tenants.services.usage_adjust`, audited)."""

    list_display = ["job", "kind", "user", "tenant", "gpu_seconds", "images", "status", "ended_at", "reason"]
    list_filter = ["tenant", "kind", "status"]
    search_fields = ["user__username", "job__public_id", "reason"]
    date_hierarchy = "ended_at"
    change_list_template = "admin/tenants/usagerecord/change_list.html"

    # Append-only for everyone, superusers included: records are written by the job lifecycle only
    # (a correction is a new adjusting record, never an edit). The admin shows them read-only.
    actions = None  # no "delete selected" either

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        own = [
            path("export/", self.admin_site.admin_view(self.export_view), name="tenants_usagerecord_export"),
            path("adjust/", self.admin_site.admin_view(self.adjust_view), name="tenants_usagerecord_adjust"),
        ]
        return own + super().get_urls()

    def _page(self, request: HttpRequest, title: str, form: forms.Form, status: int = 200) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "title": title, "form": form,
                   "opts": self.model._meta}
        return TemplateResponse(request, "admin/tenants/usagerecord/form.html", context, status=status)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if "month" not in request.GET:
            return self._page(request, "Export usage", UsageExportForm(initial={"format": "csv"}))
        form = UsageExportForm(request.GET)
        if any("\x00" in value for value in request.GET.values()):  # PostgreSQL cannot even look such a name up
            form = UsageExportForm(initial={"format": "csv"})
            form.add_error(None, "remove the NUL characters")
            return self._page(request, "Export usage", form, status=400)
        if not form.is_valid():
            return self._page(request, "Export usage", form, status=400)
        month, tenant, fmt = form.cleaned_data["month"], form.cleaned_data["tenant"], form.cleaned_data["format"]
        period = UsagePeriod(month=month)
        if form.cleaned_data["statement"]:
            try:
                chunks = statement_chunks(statement_for(tenant=tenant, month=month), fmt)
            except RequestError as exc:
                form.add_error(None, exc.message)
                return self._page(request, "Export usage", form, status=400)
            filename = export_filename("statement", period, tenant.slug, fmt)
        else:
            scope = UsageScope(tenant=tenant, user=None)
            header = {**period.as_json(), "tenant": tenant.slug if tenant else None, "user": None}
            chunks = record_chunks(usage_records(period, scope), fmt, header=header)
            filename = export_filename("usage", period, tenant.slug if tenant else "all", fmt)
        content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
        response = StreamingHttpResponse(chunks, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def adjust_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("tenants.add_usagerecord"):
            raise PermissionDenied
        if any("\x00" in value for value in request.POST.values()):  # PostgreSQL cannot even look such a name up
            form = UsageAdjustmentForm()
            form.add_error(None, "remove the NUL characters")
            return self._page(request, "Add adjustment", form, status=400)
        form = UsageAdjustmentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                record = usage_adjust(actor=request.user, tenant=data["tenant"], user=data["member"],
                                      gpu_seconds=data["gpu_seconds"], images=data["images"], reason=data["reason"])
            except RequestError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                self.message_user(request, f"Adjustment {record.pk} recorded for {data['member']} in {data['tenant']}.",
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:tenants_usagerecord_changelist"))
        return self._page(request, "Add adjustment", form, status=400 if request.method == "POST" else 200)


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
