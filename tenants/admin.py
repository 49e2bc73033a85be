"""Django admin for tenants, members, API tokens, plans and their prices, model access rules,
invitations and the audit log (operators use it to manage the platform).

Every operator save or delete here writes an `AuditEntry` (`AuditedAdmin`), in the admin's own
transaction, with the object's fields before and after; the audit log itself is read-only for
everyone. A plan's price row, once in effect, is never edited (a new price is a new row), and
prices are checked against the plan currency's decimals. "Create a tenant" (a link on the Tenants
list) is one form: the tenant, its plan and its first admin, through `tenants.services.tenant_onboard`.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from a1111.errors import RequestError
from frontend.workspace.tab_ids import HIDEABLE_TABS, hidden_tab_ids
from tenants.audit import audit_record, snapshot
from tenants.exports import FORMATS, UsagePeriod, UsageScope, export_filename, record_chunks, statement_chunks, usage_records
from tenants.models import (
    ApiToken,
    AuditEntry,
    Invitation,
    Membership,
    ModelAccessRule,
    Plan,
    PlanPrice,
    PromptStyle,
    Tenant,
    TenantPlan,
    UsageRecord,
)
from tenants.money import InvalidMoney, InvalidPeriod, parse_month, parse_price
from tenants.services import ADJUSTMENT_REASON_MAX, tenant_onboard, token_create, token_revoke, usage_adjust
from tenants.statements import statement_for
from tenants.workdirs import workdir_ensure


# --- the audit of operators' writes -------------------------------------------------------------------

def _audit_fields(obj: models.Model) -> list[str]:
    """The fields an audit entry records: concrete ones, a foreign key by its object's name; never a digest."""
    return [field.name for field in obj._meta.concrete_fields if field.name not in ("digest", "password")]


def _tenant_of(obj: models.Model) -> Tenant | None:
    if isinstance(obj, Tenant):
        return obj if obj.pk else None
    tenant = getattr(obj, "tenant", None)
    if isinstance(tenant, Tenant):
        return tenant
    user = getattr(obj, "user", None)
    membership = Membership.objects.select_related("tenant").filter(user=user).first() if user is not None else None
    return membership.tenant if membership else None


def _audit_target(obj: models.Model) -> str:
    return f"{obj._meta.verbose_name} {obj}"


def audit_operator_write(request: HttpRequest, obj: models.Model, verb: str, before: dict | None) -> None:
    """One audit entry for an operator's add, change or delete of `obj` in admin."""
    after = snapshot(obj, _audit_fields(obj)) if verb != "delete" else None
    if verb == "change" and before == after:
        return
    audit_record(actor=request.user, tenant=_tenant_of(obj), action=f"admin.{obj._meta.model_name}.{verb}",
                 target=_audit_target(obj), before=before, after=after)


def _stored_snapshot(obj: models.Model) -> dict | None:
    if obj.pk is None:
        return None
    stored = type(obj)._default_manager.filter(pk=obj.pk).first()
    return snapshot(stored, _audit_fields(stored)) if stored is not None else None


class AppendOnlyAdmin(admin.ModelAdmin):
    """Rows nobody adds, changes or deletes here, superusers included (usage records, the audit
    log): the platform writes them, the admin shows them."""

    actions = None  # no "delete selected" either

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AuditedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletes (one object, a bulk delete, inline rows) are audited."""

    def save_model(self, request: HttpRequest, obj, form, change) -> None:
        before = _stored_snapshot(obj) if change else None
        super().save_model(request, obj, form, change)
        audit_operator_write(request, obj, "change" if change else "add", before)

    def delete_model(self, request: HttpRequest, obj) -> None:
        before = snapshot(obj, _audit_fields(obj))
        tenant = None if isinstance(obj, Tenant) else _tenant_of(obj)  # a deleted tenant is named in `target`
        target, action = _audit_target(obj), f"admin.{obj._meta.model_name}.delete"
        super().delete_model(request, obj)
        audit_record(actor=request.user, tenant=tenant, action=action, target=target, before=before)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)

    def save_formset(self, request: HttpRequest, form, formset, change) -> None:
        befores = {f.instance.pk: _stored_snapshot(f.instance) for f in formset.forms if f.instance.pk}
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            audit_operator_write(request, obj, "add", None)
        for obj, _changed in formset.changed_objects:
            audit_operator_write(request, obj, "change", befores.get(obj.pk))
        for obj in formset.deleted_objects:
            audit_record(actor=request.user, tenant=_tenant_of(form.instance), target=_audit_target(obj),
                         action=f"admin.{obj._meta.model_name}.delete", before=befores.get(obj.pk))


# --- effective-dated rows: plans' prices, tenants' plans ----------------------------------------------

PRICE_FIELDS = ("price_per_gpu_hour", "price_per_image", "monthly_fee")
START_GRACE = timedelta(minutes=10)  # the time an operator takes between the admin's "Now" and Save


def _in_effect(row: models.Model) -> bool:
    return row.pk is not None and row.effective_from is not None and row.effective_from <= timezone.now()


class EffectiveDatedForm(forms.ModelForm):
    """A row that holds from its `effective_from` (a plan's price, a tenant's plan); once in effect it
    is shown read-only (its fields disabled: what is posted for them is ignored)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if _in_effect(self.instance):
            for field in self.fields.values():
                field.disabled = True


class EffectiveDatedFormSet(forms.BaseInlineFormSet):
    """Rows in effect are never changed or deleted, and a new or changed row starts now or later: a
    change is a new row, so a bill of a month already made stays what it was."""

    def add_fields(self, form, index) -> None:
        super().add_fields(form, index)
        if "DELETE" in form.fields and _in_effect(form.instance):
            form.fields["DELETE"].disabled = True

    def rows_to_check(self) -> list[forms.ModelForm]:
        """The forms of new or future rows (a row in effect, as stored, is not changed)."""
        now = timezone.now()
        model = self.model
        stored_in_effect = set(model.objects.filter(**{self.fk.name: self.instance.pk}, effective_from__lte=now)
                               .values_list("pk", flat=True)) if self.instance.pk else set()
        return [form for form in self.forms
                if getattr(form, "cleaned_data", None) and form.instance.pk not in stored_in_effect]

    def clean(self) -> None:
        super().clean()
        for form in self.rows_to_check():
            starts = form.cleaned_data.get("effective_from")
            if form.has_changed() and starts is not None and starts < timezone.now() - START_GRACE:
                form.add_error("effective_from", "a new row starts now or later: one from the past would change "
                                                 "bills of months already made")


class PlanPriceForm(EffectiveDatedForm):
    class Meta:
        model = PlanPrice
        fields = "__all__"


class PlanPriceFormSet(EffectiveDatedFormSet):
    """…and prices have at most the plan currency's decimals."""

    def clean(self) -> None:
        super().clean()
        currency = self.instance.currency or "USD"
        for form in self.rows_to_check():
            for name in PRICE_FIELDS:
                if form.cleaned_data.get(name) is not None:
                    try:
                        parse_price(form.cleaned_data[name], currency, field=name)
                    except InvalidMoney as exc:
                        form.add_error(name, str(exc))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class TenantPlanForm(EffectiveDatedForm):
    class Meta:
        model = TenantPlan
        fields = ["plan", "effective_from"]


class TenantPlanInline(admin.TabularInline):
    """Which plan the tenant is on from which date: a change of plan is a new row from now or later
    (a row in effect is read-only, `EffectiveDatedFormSet`)."""

    model = TenantPlan
    form = TenantPlanForm
    formset = EffectiveDatedFormSet
    extra = 0
    fields = ["plan", "effective_from"]


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
class TenantAdmin(AuditedAdmin):
    form = TenantForm
    list_display = ["slug", "name", "time_zone", "share_weight", "hidden_tabs", "member_count", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [TenantPlanInline, MembershipInline]
    change_list_template = "admin/tenants/tenant/change_list.html"

    def get_urls(self):
        onboard = path("onboard/", self.admin_site.admin_view(self.onboard_view), name="tenants_tenant_onboard")
        return [onboard, *super().get_urls()]

    def onboard_view(self, request: HttpRequest) -> HttpResponse:
        """"Create a tenant": the tenant, its plan and its first admin in one form (`tenant_onboard`)."""
        if not self.has_add_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        form = OnboardForm(request.POST or None)
        context = {**self.admin_site.each_context(request), "title": "Create a tenant", "opts": self.model._meta,
                   "form": form}
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                tenant, user, raw = tenant_onboard(
                    actor=request.user, slug=data["slug"], name=data["name"], time_zone=data["time_zone"],
                    plan=data["plan"], admin_username=data["admin_username"], admin_email=data["admin_email"],
                    admin_password=data["admin_password"], with_token=data["with_token"],
                )
            except RequestError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                context.update({"tenant": tenant, "admin_user": user, "raw_token": raw,
                                "change_url": reverse("admin:tenants_tenant_change", args=[tenant.pk])})
                response = render(request, "admin/tenants/tenant/onboarded.html", context)
                response["Cache-Control"] = "no-store"  # the token is shown once: not from a cache either
                return response
        return render(request, "admin/tenants/tenant/onboard.html", context, status=400 if form.errors else 200)

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
class MembershipAdmin(AuditedAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["tenant", "role"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]

    def save_model(self, request: HttpRequest, obj: Membership, form, change) -> None:
        super().save_model(request, obj, form, change)
        workdir_ensure(username=obj.user.username, tenant_slug=obj.tenant.slug)


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
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
        audit_operator_write(request, token, "add", None)
        self.message_user(
            request, f"Token for {obj.user}: {raw} — copy it now, it is not shown again.", messages.WARNING
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset) -> None:
        with transaction.atomic():
            for token in queryset:
                before = snapshot(token, _audit_fields(token))
                token_revoke(token=token)
                audit_operator_write(request, token, "change", before)


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
class UsageRecordAdmin(AppendOnlyAdmin):
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
class PromptStyleAdmin(AuditedAdmin):
    """Prompt styles: operators write the public ones and each team's; members' own styles (saved
    from the workspace) are listed too, for support. Scope and owner are checked by the model."""

    list_display = ["name", "scope", "tenant", "owner", "prompt", "negative_prompt", "updated_at"]
    list_filter = ["scope", "tenant"]
    search_fields = ["name", "prompt", "tenant__slug", "owner__username"]
    autocomplete_fields = ["tenant", "owner"]
    readonly_fields = ["public_id", "created_at", "updated_at"]
    fields = ["name", "scope", "tenant", "owner", "prompt", "negative_prompt", "public_id", "created_at", "updated_at"]


# --- plans and prices ---------------------------------------------------------------------------------

class PlanPriceInline(admin.TabularInline):
    model = PlanPrice
    form = PlanPriceForm
    formset = PlanPriceFormSet
    extra = 1
    fields = ["effective_from", "price_per_gpu_hour", "price_per_image", "included_gpu_seconds", "included_images",
              "monthly_fee"]


@admin.register(Plan)
class PlanAdmin(AuditedAdmin):
    list_display = ["slug", "name", "currency", "billing_mode", "created_at"]
    search_fields = ["slug", "name"]
    list_filter = ["billing_mode", "currency"]
    inlines = [PlanPriceInline]


@admin.register(ModelAccessRule)
class ModelAccessRuleAdmin(AuditedAdmin):
    list_display = ["tenant", "user", "role", "kind", "pattern", "effect", "created_at"]
    list_filter = ["tenant", "kind", "effect", "role"]
    search_fields = ["pattern", "tenant__slug", "user__username"]
    autocomplete_fields = ["tenant", "user"]
    readonly_fields = ["public_id", "created_at"]


@admin.register(Invitation)
class InvitationAdmin(AuditedAdmin):
    """Invitations are made on the Team page (the link is shown to the tenant admin once); operators
    see them and may delete one to take its link back."""

    list_display = ["user", "tenant", "created_by", "created_at", "expires_at", "accepted_at"]
    list_filter = ["tenant"]
    search_fields = ["user__username", "tenant__slug"]
    readonly_fields = ["public_id", "tenant", "user", "created_by", "created_at", "expires_at", "accepted_at"]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(AppendOnlyAdmin):
    """The audit log, read-only for everyone (superusers included): entries are only ever appended."""

    list_display = ["created_at", "actor_name", "tenant", "action", "target"]
    list_filter = ["tenant", "action"]
    search_fields = ["actor_name", "action", "target", "tenant__slug"]
    date_hierarchy = "created_at"
    actions = None



class OnboardForm(forms.Form):
    """The operator's "Create a tenant" form; `tenant_onboard` checks every value again."""

    slug = forms.SlugField(max_length=64, help_text="Short name in URLs and folders, e.g. studio-c.")
    name = forms.CharField(max_length=200)
    time_zone = forms.CharField(max_length=64, initial="UTC", help_text="IANA time zone, e.g. Asia/Tokyo.")
    plan = forms.ModelChoiceField(queryset=Plan.objects.all(), required=False)
    admin_username = forms.CharField(max_length=64, label="First admin's username")
    admin_email = forms.EmailField(required=False, label="First admin's email")
    admin_password = forms.CharField(widget=forms.PasswordInput, label="First admin's initial password",
                                     max_length=256)
    with_token = forms.BooleanField(required=False, label="Create an API token for them (shown once)")
