"""The terms in force for a member: their plan's limits (the `TenantPlan` effective then) tightened
by their own, the plan's allowed checkpoints, and whether model access rules apply to them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from django.db.models import JSONField, OuterRef, Subquery
from django.utils import timezone

from tenants.limits import Limits
from tenants.models import Membership, Plan, Tenant, TenantPlan


@dataclasses.dataclass(frozen=True)
class Terms:
    """What applies to a member now: their limits in force and the checkpoints the plan allows."""

    limits: Limits
    allowed_checkpoints: tuple[str, ...]
    time_zone: str
    plan_id: int | None = None
    has_model_rules: bool = False  # whether a team admin's model access rule applies to the member


def plan_in_force(tenant: Tenant, at: dt.datetime | None = None) -> Plan | None:
    """The plan `tenant` is on at `at` (now): its latest `TenantPlan` from then or before."""
    assignment = (
        TenantPlan.objects.select_related("plan").filter(tenant=tenant, effective_from__lte=at or timezone.now())
        .order_by("-effective_from").first()
    )
    return assignment.plan if assignment else None


def terms_for_membership(membership: Membership, *, at: dt.datetime | None = None) -> Terms:
    """The member's plan limits tightened by their own, the plan's allowed checkpoints, and whether
    any model access rule applies to them (`tenants/access.py`): ONE query, so a submit with no
    limits and no rules costs that query alone."""
    from tenants.access import member_rules_exist, json_value

    assignments = TenantPlan.objects.filter(tenant=OuterRef("pk"), effective_from__lte=at or timezone.now()).order_by(
        "-effective_from")
    row = (
        Tenant.objects.filter(pk=membership.tenant_id)
        .annotate(plan_id=Subquery(assignments.values("plan_id")[:1]),
                  plan_limits=Subquery(assignments.values("plan__limits")[:1], output_field=JSONField()),
                  plan_patterns=Subquery(assignments.values("plan__allowed_checkpoints")[:1], output_field=JSONField()),
                  has_rules=member_rules_exist(membership.user_id))
        .values_list("plan_id", "plan_limits", "plan_patterns", "has_rules").first()
    )
    plan_id, plan_limits, patterns, has_rules = row or (None, None, None, False)
    limits = Limits.from_json(json_value(plan_limits) or {}) if plan_id else Limits()
    return Terms(
        limits=limits.tightened_by(Limits.from_json(membership.limits or {})),
        allowed_checkpoints=tuple(str(p) for p in json_value(patterns) or ()) if plan_id else (),
        time_zone=membership.tenant.time_zone or "UTC",
        plan_id=plan_id,
        has_model_rules=bool(has_rules),
    )


def terms_for_members(user_ids: Iterable[int], *, at: dt.datetime | None = None) -> dict[int, Terms]:
    """`terms_for_membership` of many members at once (two queries: memberships, plan assignments):
    the dispatcher reads the terms of every owner in its queued window."""
    at = at or timezone.now()
    memberships = list(Membership.objects.select_related("tenant").filter(user_id__in=set(user_ids)))
    plans: dict[int, Plan] = {}
    for assignment in (
        TenantPlan.objects.select_related("plan")
        .filter(tenant_id__in={m.tenant_id for m in memberships}, effective_from__lte=at)
        .order_by("tenant_id", "effective_from")
    ):
        plans[assignment.tenant_id] = assignment.plan  # the latest one wins
    terms: dict[int, Terms] = {}
    for membership in memberships:
        plan = plans.get(membership.tenant_id)
        plan_limits = Limits.from_json(plan.limits) if plan else Limits()
        terms[membership.user_id] = Terms(
            limits=plan_limits.tightened_by(Limits.from_json(membership.limits or {})),
            allowed_checkpoints=tuple(plan.allowed_checkpoints or ()) if plan else (),
            time_zone=membership.tenant.time_zone or "UTC", plan_id=plan.pk if plan else None,
        )
    return terms


def running_caps(limits: Limits) -> tuple[int | None, int | None]:
    """(`user_running_jobs`, `tenant_running_jobs`) in force, None where unset: scheduler inputs."""
    user_cap, tenant_cap = limits.get("user_running_jobs"), limits.get("tenant_running_jobs")
    return (int(user_cap) if user_cap is not None else None, int(tenant_cap) if tenant_cap is not None else None)
