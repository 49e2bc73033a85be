"""Which checkpoints and LoRAs a member may use: their team admin's `ModelAccessRule`s and their
plan's `allowed_checkpoints`.

The order (as `ModelAccessRule` documents it): the member's own rules decide first, then their
role's; within each, a matching deny wins over a matching allow; no rule matches: allowed. The
plan's `allowed_checkpoints` patterns (empty: every checkpoint) bound checkpoints whatever the
rules say: a tenant admin's allow cannot give what the plan does not sell.

A pattern is an fnmatch pattern, case-insensitive, matched against the model's name as
A1111 lists it with and without its extension, and its file stem (so `sdxl-*` matches
`styles/sdxl-anime.safetensors`). Rules apply to every folder a member sees (their own, the
team's, the public one): the admin's rule is about the model, wherever its file is.

`inference/model_registry.py` applies this: a denied model is not listed, and naming one in a
request is `ModelDenied`, a 403 saying the team's admin (or the plan) does not allow it. The
member can see the model is there (it is their own, their team's or a public one: nothing of
another team leaks); the 403 tells them whom to ask instead of "unknown model".

Cost: `model_access_for` is one query when the tenant has no rule for the member (the plan's
patterns and whether any rule applies, read together), and one more to read the rules when
some apply.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from typing import Literal

from django.contrib.auth.models import AbstractUser
from django.db.models import Exists, JSONField, OuterRef, Q, Subquery
from django.utils import timezone

from a1111.errors import Forbidden
from tenants.models import Membership, ModelAccessRule, Tenant, TenantPlan

RuleKind = Literal["checkpoint", "lora"]
# model_registry folder kinds → rule kinds
FOLDER_RULE_KINDS: dict[str, RuleKind] = {"Stable-diffusion": "checkpoint", "Lora": "lora"}


class ModelDenied(Forbidden):
    """A model the member can see but may not use: their team admin's rule, or their plan (403)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    kind: str
    pattern: str
    effect: str


def _names(name: str) -> tuple[str, ...]:
    """The forms a model name is matched in: as given, without extension, the file stem."""
    lowered = name.strip().lower()
    without = lowered.rsplit(".", 1)[0] if "." in lowered.rsplit("/", 1)[-1] else lowered
    stem = without.rsplit("/", 1)[-1]
    return tuple(dict.fromkeys((lowered, without, stem)))


def _matches(pattern: str, names: tuple[str, ...]) -> bool:
    pattern = pattern.strip().lower()
    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


@dataclasses.dataclass(frozen=True)
class ModelAccess:
    """What one member may use; `ModelAccess()` allows everything (no rules, no plan patterns)."""

    own_rules: tuple[Rule, ...] = ()
    role_rules: tuple[Rule, ...] = ()
    allowed_checkpoints: tuple[str, ...] = ()

    @property
    def unrestricted(self) -> bool:
        return not (self.own_rules or self.role_rules or self.allowed_checkpoints)

    def refusal(self, kind: str, name: str) -> str | None:
        """Why `name` (a model of rule kind `kind`) is not allowed, or None when it is."""
        if self.unrestricted:
            return None
        names = _names(name)
        if kind == "checkpoint" and self.allowed_checkpoints and not any(
            _matches(pattern, names) for pattern in self.allowed_checkpoints
        ):
            return (f"checkpoint {name!r} is not in your team's plan (it allows "
                    f"{', '.join(self.allowed_checkpoints)}): pick another, or ask your team's admin")
        for rules in (self.own_rules, self.role_rules):
            matching = [rule for rule in rules if rule.kind == kind and _matches(rule.pattern, names)]
            if any(rule.effect == ModelAccessRule.Effect.DENY for rule in matching):
                return f"your team's admin has not allowed the {kind} {name!r} for you: pick another, or ask them"
            if matching:
                return None
        return None

    def allows(self, kind: str, name: str) -> bool:
        return self.refusal(kind, name) is None

    def check(self, kind: str, name: str, *, field: str = "") -> None:
        """`ModelDenied` naming `field` when `name` is not allowed."""
        reason = self.refusal(kind, name)
        if reason is not None:
            raise ModelDenied(reason, field=field)


UNRESTRICTED = ModelAccess()


def _member_rules(user_id: int):
    role = Membership.objects.filter(user_id=user_id, tenant=OuterRef("tenant")).values("role")
    return ModelAccessRule.objects.filter(Q(user_id=user_id) | Q(user__isnull=True, role__in=Subquery(role)))


def member_rules_exist(user_id: int) -> Exists:
    """An `Exists` over a `Tenant` query: whether any of its rules applies to member `user_id`."""
    return Exists(_member_rules(user_id).filter(tenant=OuterRef("pk")))


def json_value(value: object) -> object:
    """A JSON column read through a subquery: decoded where the backend hands back its text."""
    return json.loads(value) if isinstance(value, str) else value


def model_access_with(user: AbstractUser, tenant: Tenant, *, allowed_checkpoints: tuple[str, ...],
                      has_rules: bool) -> ModelAccess:
    """`model_access_for` when the plan's patterns and whether rules apply are known already (a
    submit read them with the member's limits, `tenants.quotas.terms_for_membership`): no query
    without rules."""
    own: list[Rule] = []
    by_role: list[Rule] = []
    if has_rules:
        for user_id, kind, pattern, effect in (
            _member_rules(user.pk).filter(tenant=tenant).order_by("pk").values_list("user_id", "kind", "pattern", "effect")
        ):
            (own if user_id is not None else by_role).append(Rule(kind, pattern, effect))
    return ModelAccess(own_rules=tuple(own), role_rules=tuple(by_role), allowed_checkpoints=tuple(allowed_checkpoints))


def model_access_for(user: AbstractUser, tenant: Tenant | None) -> ModelAccess:
    """The rules and plan patterns that apply to `user` in `tenant` now (no tenant: no limits)."""
    if tenant is None:
        return UNRESTRICTED
    plan_patterns = (
        TenantPlan.objects.filter(tenant=OuterRef("pk"), effective_from__lte=timezone.now())
        .order_by("-effective_from").values("plan__allowed_checkpoints")[:1]
    )
    row = (
        Tenant.objects.filter(pk=tenant.pk)
        .annotate(patterns=Subquery(plan_patterns, output_field=JSONField()), has_rules=member_rules_exist(user.pk))
        .values_list("patterns", "has_rules").first()
    )
    if row is None:
        return UNRESTRICTED
    patterns, has_rules = row
    allowed = tuple(str(pattern) for pattern in json_value(patterns) or ())
    return model_access_with(user, tenant, allowed_checkpoints=allowed, has_rules=has_rules)


def model_allowed(user: AbstractUser, kind: str, name: str) -> bool:
    """Whether `user` may use the `kind` ("checkpoint" or "lora") model named `name`."""
    from tenants.selectors import tenant_for_user

    return model_access_for(user, tenant_for_user(user)).allows(kind, name)
