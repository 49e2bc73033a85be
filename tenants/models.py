"""Tenants, memberships, API tokens, and what they are billed and allowed.

A user belongs to exactly one tenant (as PAI-EAS's Cluster Edition gives each member one
workspace); platform operators are Django staff and need no membership.

Billing: a tenant is on a `Plan` from a date (`TenantPlan`, effective-dated), a plan has prices
from a date (`PlanPrice`, effective-dated: a price change never rewrites the past), and every job
that ended writes one `UsageRecord` (append-only; a correction is a new adjusting record). Bills
(`tenants/statements.py`) are queries over the records, never a separate counter. Limits
(`tenants/limits.py`) are set on the plan by operators and on a member by their tenant admin;
`ModelAccessRule` allows or denies checkpoints and LoRAs per member or role. Every admin action
writes an `AuditEntry`.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from frontend.workspace.tab_ids import UnknownTab, hidden_tab_ids
from tenants.limits import MEMBER_KEYS, InvalidLimits, Limits
from tenants.money import CURRENCY_DECIMALS, InvalidMoney, InvalidPeriod, parse_price, validate_time_zone

# Usernames become folder names under DATA_DIR/users: keep them path-safe.
username_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "Use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


def new_public_id() -> str:
    return secrets.token_urlsafe(12)


def validate_hidden_tabs(value: object) -> None:
    """A list of workspace tab ids that may be hidden (`frontend/workspace/tab_ids.py`)."""
    if not isinstance(value, list):
        raise ValidationError("expected a list of workspace tab ids")
    try:
        hidden_tab_ids(value)
    except UnknownTab as exc:
        raise ValidationError(str(exc)) from None


def validate_tz_name(value: str) -> None:
    try:
        validate_time_zone(value)
    except InvalidPeriod as exc:
        raise ValidationError(str(exc)) from None


def validate_plan_limits(value: object) -> None:
    try:
        Limits.from_json(value)
    except InvalidLimits as exc:
        raise ValidationError(str(exc)) from None


def validate_member_limits(value: object) -> None:
    try:
        Limits.from_json(value, allowed=MEMBER_KEYS)
    except InvalidLimits as exc:
        raise ValidationError(str(exc)) from None


class Tenant(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    share_weight = models.FloatField(
        default=1.0, help_text="The tenant's weight in fair share (its plan's share of the GPUs)."
    )
    hidden_workspace_tabs = models.JSONField(
        default=list, blank=True, validators=[validate_hidden_tabs],
        help_text="Workspace tabs this tenant's members do not get (besides the platform's ATELIER_HIDDEN_TABS): "
        "they are not built and their functions are refused.",
    )
    time_zone = models.CharField(
        max_length=64, default="UTC", validators=[validate_tz_name],
        help_text="IANA time zone of the tenant's bills, quota days and dates shown (e.g. Asia/Shanghai).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Tenant admin"
        MEMBER = "member", "Member"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    limits = models.JSONField(
        default=dict, blank=True, validators=[validate_member_limits],
        help_text="This member's own limits (tenants/limits.py MEMBER_KEYS), within the plan's; empty: the plan's.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant__slug", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once."""

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to recognise a token.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name}, {self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UsageRecord(models.Model):
    """What one job used, or an adjustment. Exactly one record per job (the unique key makes
    recording idempotent), written by the transaction that finishes the job
    (`inference/transitions.py`). Append-only: nothing changes or deletes a record (the admin
    cannot either); a correction is a new record with `kind="adjustment"`, no job, signed amounts
    and a reason, and an audit entry. Bills are queries over these rows, never a separate counter;
    a record counts in the period its `ended_at` falls in (a job straddling midnight counts once)."""

    ADJUSTMENT = "adjustment"

    job = models.OneToOneField("inference.Job", on_delete=models.PROTECT, related_name="usage", null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage_records")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_records")
    kind = models.CharField(max_length=16, default="txt2img", help_text="The job's kind, or 'adjustment'.")
    service_name = models.CharField(max_length=64, blank=True, help_text="The EAS service the job came through.")
    checkpoint_title = models.CharField(max_length=500, blank=True)
    checkpoint_sha256 = models.CharField(max_length=64, blank=True)
    gpu_seconds = models.FloatField(help_text="Measured by the worker around the pipeline; a shared batch's "
                                    "time split pro rata by pixels × steps.")
    images = models.IntegerField(help_text="Images kept (negative only in an adjustment).")
    texts = models.PositiveIntegerField(default=0, help_text="Prompts a promptgen job generated.")
    pixel_steps = models.BigIntegerField(default=0, help_text="Σ width × height × steps of the job's images.")
    queue_wait_seconds = models.FloatField(default=0.0, help_text="From submission to the first start.")
    status = models.CharField(max_length=16)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(db_index=True, help_text="The period a record counts in is its end's.")
    reason = models.TextField(blank=True, help_text="Why an adjustment was made.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+", help_text="Who made an adjustment.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-ended_at", "-pk"]
        indexes = [
            models.Index(fields=["tenant", "ended_at"], name="usage_tenant_ended"),
            models.Index(fields=["user", "ended_at"], name="usage_user_ended"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="adjustment", job__isnull=True) | (~models.Q(kind="adjustment") & models.Q(job__isnull=False)),
                name="usage_job_unless_adjustment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id or 'adjustment'}: {self.gpu_seconds:.1f} GPU-s"


def validate_currency(value: str) -> None:
    if value not in CURRENCY_DECIMALS:
        raise ValidationError(f"unknown currency {value!r}; use one of {', '.join(sorted(CURRENCY_DECIMALS))}")


class Plan(models.Model):
    """What a tenant is sold: its limits (`tenants/limits.py`), the checkpoints it may use and how it
    is billed. Prices are `PlanPrice` rows, each from its own date."""

    class BillingMode(models.TextChoices):
        GENERATION_TIME = "generation_time", "By generation time (GPU-seconds and images used)"
        RESERVED_CAPACITY = "reserved_capacity", "By reserved capacity (a monthly fee)"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="USD", validators=[validate_currency])
    billing_mode = models.CharField(max_length=32, choices=BillingMode.choices, default=BillingMode.GENERATION_TIME)
    limits = models.JSONField(default=dict, blank=True, validators=[validate_plan_limits],
                              help_text="Limit name → bound (tenants/limits.py); absent: unlimited.")
    allowed_checkpoints = models.JSONField(
        default=list, blank=True,
        help_text="Checkpoint name patterns (fnmatch, e.g. 'sd15-*') the plan's tenants may use; empty: all.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug


class PlanPrice(models.Model):
    """A plan's prices from `effective_from` until the next row's date. Never edited once in
    effect: a new price is a new row, so a bill for a past month is the same whenever it is made."""

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="prices")
    effective_from = models.DateTimeField()
    price_per_gpu_hour = models.DecimalField(max_digits=14, decimal_places=3, default=0)
    price_per_image = models.DecimalField(max_digits=14, decimal_places=3, default=0)
    included_gpu_seconds = models.PositiveIntegerField(default=0, help_text="Free GPU-seconds each month.")
    included_images = models.PositiveIntegerField(default=0, help_text="Free images each month.")
    monthly_fee = models.DecimalField(max_digits=14, decimal_places=3, default=0,
                                      help_text="Charged each month (the whole bill in reserved-capacity mode).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["plan", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["plan", "effective_from"], name="plan_price_once_per_date")]

    def __str__(self) -> str:
        return f"{self.plan} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        errors = {}
        currency = self.plan.currency if self.plan_id else "USD"
        for name in ("price_per_gpu_hour", "price_per_image", "monthly_fee"):
            try:
                parse_price(getattr(self, name), currency, field=name)
            except InvalidMoney as exc:
                errors[name] = str(exc)
        if errors:
            raise ValidationError(errors)


class TenantPlan(models.Model):
    """Tenant `tenant` is on `plan` from `effective_from` until its next row's date."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="plan_assignments")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="assignments")
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["tenant", "effective_from"], name="tenant_plan_once_per_date")]

    def __str__(self) -> str:
        return f"{self.tenant} on {self.plan} from {self.effective_from:%Y-%m-%d}"


class ModelAccessRule(models.Model):
    """A tenant admin's allow or deny of checkpoints or LoRAs (by name pattern) for one member or
    for a role. For a model, a member's own rules decide first, then their role's; the first
    matching rule decides, a deny before an allow; no rule matches: allowed (within the plan's
    `allowed_checkpoints`). `tenants/access.py` evaluates them."""

    class Kind(models.TextChoices):
        CHECKPOINT = "checkpoint", "Checkpoint"
        LORA = "lora", "LoRA"

    class Effect(models.TextChoices):
        ALLOW = "allow", "Allow"
        DENY = "deny", "Deny"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="model_rules")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="model_rules")
    role = models.CharField(max_length=16, choices=Membership.Role.choices, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    pattern = models.CharField(max_length=200, help_text="Model name or fnmatch pattern, e.g. 'sdxl-*'.")
    effect = models.CharField(max_length=8, choices=Effect.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "kind", "pattern"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False, role="") | models.Q(user__isnull=True) & ~models.Q(role="")),
                name="model_rule_for_a_member_or_a_role",
            ),
        ]

    def __str__(self) -> str:
        who = self.user.get_username() if self.user_id else f"role {self.role}"
        return f"{self.effect} {self.kind} {self.pattern!r} for {who}"


class AuditEntry(models.Model):
    """One admin action: who, what, when, the object before and after. Append-only (`tenants/audit.py`
    writes them; nobody edits or deletes them, operators included)."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="+")
    actor_name = models.CharField(max_length=150, help_text="Kept when the actor's account is gone.")
    tenant = models.ForeignKey(Tenant, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries")
    action = models.CharField(max_length=64, help_text="What was done, e.g. 'member.add', 'limits.set'.")
    target = models.CharField(max_length=300, help_text="What it was done to, e.g. 'member alice'.")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target}"


class Invitation(models.Model):
    """A link a tenant admin sends to a new member: opening it sets their password. Only the
    token's SHA-256 is stored; it works once, before `expires_at`."""

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation of {self.user} to {self.tenant}"


class PromptStyle(models.Model):
    """A saved prompt style (A1111's Styles, `a1111/styles.py` merges them): public (every member,
    managed by operators), a team's (a tenant's members, managed by operators in admin) or one
    member's own (saved from the workspace's 💾). A name is unique within its scope; where names
    clash, the most personal one is the one a member sees and uses (own, then team, then public:
    `tenants.selectors.prompt_styles_for_user`)."""

    class Scope(models.TextChoices):
        PUBLIC = "public", "Public"
        TENANT = "tenant", "Team"
        USER = "user", "Member's own"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    name = models.CharField(max_length=100)
    prompt = models.TextField(blank=True, max_length=10_000, help_text="`{prompt}` marks where the member's prompt goes; "
                              "without it the style is appended after ', '.")
    negative_prompt = models.TextField(blank=True, max_length=10_000)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.PUBLIC)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="prompt_styles",
                               help_text="For a team style only.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="prompt_styles", help_text="For a member's own style only.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "name"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(scope="public", tenant__isnull=True, owner__isnull=True)
                    | models.Q(scope="tenant", tenant__isnull=False, owner__isnull=True)
                    | models.Q(scope="user", tenant__isnull=True, owner__isnull=False)
                ),
                name="prompt_style_scope_matches_its_owner",
            ),
            models.UniqueConstraint(fields=["name"], condition=models.Q(scope="public"), name="prompt_style_public_name"),
            models.UniqueConstraint(fields=["tenant", "name"], condition=models.Q(scope="tenant"),
                                    name="prompt_style_tenant_name"),
            models.UniqueConstraint(fields=["owner", "name"], condition=models.Q(scope="user"),
                                    name="prompt_style_owner_name"),
        ]

    def __str__(self) -> str:
        where = {"tenant": f" ({self.tenant})", "user": f" ({self.owner})"}.get(self.scope, "")
        return f"{self.name}{where}"

    def clean(self) -> None:
        errors = {}
        if self.scope == self.Scope.TENANT and self.tenant_id is None:
            errors["tenant"] = "a team style needs its tenant"
        if self.scope != self.Scope.TENANT and self.tenant_id is not None:
            errors["tenant"] = "only a team style has a tenant"
        if self.scope == self.Scope.USER and self.owner_id is None:
            errors["owner"] = "a member's style needs its owner"
        if self.scope != self.Scope.USER and self.owner_id is not None:
            errors["owner"] = "only a member's own style has an owner"
        if not self.name.strip():
            errors["name"] = "give the style a name"
        if errors:
            raise ValidationError(errors)


from tenants.upload_models import FileUpload  # noqa: E402,F401  (registered with the app: resumable uploads)
