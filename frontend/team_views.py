"""The Team pages (`/team/…`): a tenant admin manages their own team in the browser, and
`/invite/<token>/`, where an invited member sets their password.

A tenant admin adds members (an initial password or an invitation link), removes them, sets their
role and their own limits within the plan, allows or denies checkpoints and LoRAs per member or per
role, creates and revokes members' API tokens, and reads the team's jobs and audit log.

Thin views: every page starts with `tenants.selectors.team_admin_membership` (the caller's tenant
if they are its admin, else 404: members, other tenants' admins and operators without a team get
the same 404 on every URL, and objects are looked up within that tenant only); every write is one
`tenants.services` function, which checks the actor again and writes the audit entry. A refused
form is rendered again with the field's message (400), never a 500. Raw API tokens and invitation
links are shown in that one answer only (`Cache-Control: no-store`).

Like `/tokens/`, the pages answer the browser session (every POST CSRF-checked) or an admin's API
token in the `Authorization` header (`frontend.eas_views.member_page`).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from a1111.errors import RequestError
from frontend.eas_views import member_page
from frontend.member_selectors import language_for_user
from frontend.workspace.i18n import strings
from inference.model_registry import model_list_for_user
from tenants.limits import LABELS, MEMBER_KEYS
from tenants.models import Membership, ModelAccessRule
from tenants.selectors import (
    plan_for_tenant,
    team_admin_membership,
    team_audit,
    team_invitations_open,
    team_jobs,
    team_member_get,
    team_members,
    team_rule_get,
    team_rules,
    team_token_get,
    team_tokens,
    tenant_usage_this_month,
)
from tenants.services import (
    TOKEN_NAME_MAX,
    invitation_accept,
    invitation_create,
    invitation_open,
    member_add,
    member_limits_set,
    member_remove,
    member_role_set,
    model_rule_add,
    model_rule_delete,
    plan_limits_for_tenant,
    token_create_for_member,
    token_revoke_for_member,
)

ADD_FIELDS = ("username", "email", "role", "password", "access")
RULE_FIELDS = ("member", "role", "kind", "pattern", "effect")


def _errors(exc: RequestError) -> dict[str, str]:
    return {exc.field or "form": exc.message}


def _render(request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200,
            secret: bool = False) -> HttpResponse:
    membership = context["membership"]
    response = render(request, template, {
        "t": strings(language_for_user(request.user)),
        "tenant": membership.tenant,
        "is_tenant_admin": True,
        "roles": Membership.Role.choices,
        "rule_kinds": ModelAccessRule.Kind.choices,
        "rule_effects": ModelAccessRule.Effect.choices,
        "token_name_max": TOKEN_NAME_MAX,
        **context,
    }, status=status)
    if secret:
        response["Cache-Control"] = "no-store"  # a raw token or link is shown once: not from a cache either
    return response


def _team_page(request: HttpRequest, membership: Membership, *, status: int = 200, form: dict | None = None,
               errors: dict | None = None, message: str = "", invitation: dict | None = None) -> HttpResponse:
    tenant = membership.tenant
    usage = tenant_usage_this_month(tenant)
    models = [
        entry for kind in ("Stable-diffusion", "Lora", "VAE", "embeddings", "hypernetworks")
        for entry in model_list_for_user(request.user, kind) if entry.scope == "tenant"
    ]
    return _render(request, "frontend/team.html", {
        "membership": membership,
        "members": usage,
        "roster": team_members(tenant),
        "total_images": sum(row["images"] for row in usage),
        "total_gpu_seconds": sum(row["gpu_seconds"] for row in usage),
        "models": models,
        "plan": plan_for_tenant(tenant),
        "invitations": team_invitations_open(tenant),
        "form": form or {"role": Membership.Role.MEMBER, "access": "password"},
        "errors": errors or {},
        "message": message,
        "invitation": invitation,
    }, status=status, secret=invitation is not None)


def _limit_rows(membership: Membership, plan_values: dict, form: dict | None) -> list[dict]:
    own = membership.limits or {}
    return [
        {"key": key, "label": LABELS[key], "plan": plan_values.get(key),
         "value": (form or {}).get(key, own.get(key, ""))}
        for key in MEMBER_KEYS
    ]


def _member_page(request: HttpRequest, admin: Membership, member: Membership, *, status: int = 200,
                 form: dict | None = None, errors: dict | None = None, message: str = "",
                 new_token: dict | None = None, invitation: dict | None = None) -> HttpResponse:
    plan = plan_limits_for_tenant(admin.tenant)
    return _render(request, "frontend/team_member.html", {
        "membership": admin,
        "member": member,
        "limit_rows": _limit_rows(member, dict(plan.values), form),
        "rules": team_rules(admin.tenant, user=member.user),
        "role_rules": [rule for rule in team_rules(admin.tenant, roles_only=True) if rule.role == member.role],
        "tokens": team_tokens(admin.tenant, member.user),
        "form": form or {},
        "errors": errors or {},
        "message": message,
        "new_token": new_token,
        "invitation": invitation,
    }, status=status, secret=new_token is not None or invitation is not None)


def _rules_page(request: HttpRequest, admin: Membership, *, status: int = 200, form: dict | None = None,
                errors: dict | None = None, message: str = "") -> HttpResponse:
    return _render(request, "frontend/team_rules.html", {
        "membership": admin,
        "rules": team_rules(admin.tenant),
        "roster": team_members(admin.tenant),
        "form": form or {},
        "errors": errors or {},
        "message": message,
    }, status=status)


@member_page
@require_http_methods(["GET", "POST"])
def team(request: HttpRequest) -> HttpResponse:
    """The team: members and their usage this month, open invitations, team models; (POST) add a member
    with an initial password (`access=password`) or an invitation link (`access=invite`)."""
    admin = team_admin_membership(request.user)
    if request.method == "GET":
        return _team_page(request, admin)
    form = {field: request.POST.get(field, "") for field in ADD_FIELDS}
    invite = form["access"] == "invite"
    try:
        user, raw = member_add(actor=request.user, tenant=admin.tenant, username=form["username"],
                               email=form["email"], role=form["role"] or Membership.Role.MEMBER,
                               password=form["password"], invite=invite)
    except RequestError as exc:
        form["password"] = ""  # never echoed back
        return _team_page(request, admin, status=400, form=form, errors=_errors(exc))
    t = strings(language_for_user(request.user))
    invitation = None
    if raw is not None:
        invitation = {"username": user.get_username(), "url": request.build_absolute_uri(f"/invite/{raw}/")}
    return _team_page(request, admin, message=t["team_member_added"].format(member=user.get_username()),
                      invitation=invitation)


@member_page
@require_http_methods(["GET", "POST"])
def member(request: HttpRequest, member: str) -> HttpResponse:
    """One member: their role, their own limits beside the plan's, their model rules and API tokens.
    POST sets what it carries: `role` if present, and the limits whose fields are present (a blank
    limit: the plan's); fields left out stay as they are."""
    admin = team_admin_membership(request.user)
    target = team_member_get(admin.tenant, member)
    if request.method == "GET":
        return _member_page(request, admin, target)
    t = strings(language_for_user(request.user))
    form = {key: request.POST[key] for key in ("role", *MEMBER_KEYS) if key in request.POST}
    try:
        if "role" in form:
            target = member_role_set(actor=request.user, tenant=admin.tenant, username=member, role=form["role"])
            if target.user_id == request.user.pk and target.role != Membership.Role.ADMIN:
                return redirect("/")  # no longer an admin: the Team pages are not theirs any more
        present = {key: form[key].strip() for key in MEMBER_KEYS if key in form}
        if present:
            target = member_limits_set(actor=request.user, tenant=admin.tenant, username=member,
                                       limits={**(target.limits or {}), **present})
    except RequestError as exc:
        target.refresh_from_db()
        return _member_page(request, admin, target, status=400, form=form, errors=_errors(exc))
    return _member_page(request, admin, target, message=t["team_member_saved"].format(member=member))


@member_page
@require_POST
def member_remove_view(request: HttpRequest, member: str) -> HttpResponse:
    """Take a member off the team (their account is deactivated, their tokens revoked)."""
    admin = team_admin_membership(request.user)
    target = team_member_get(admin.tenant, member)
    try:
        member_remove(actor=request.user, tenant=admin.tenant, username=member)
    except RequestError as exc:
        return _member_page(request, admin, target, status=400, errors=_errors(exc))
    t = strings(language_for_user(request.user))
    return _team_page(request, admin, message=t["team_member_removed"].format(member=member))


@member_page
@require_POST
def member_invite_view(request: HttpRequest, member: str) -> HttpResponse:
    """A new invitation link for a member (one who lost theirs, or forgot their password): opening it
    sets their password. Shown in this answer only."""
    admin = team_admin_membership(request.user)
    target = team_member_get(admin.tenant, member)
    _, raw = invitation_create(actor=request.user, tenant=admin.tenant, username=member)
    invitation = {"username": member, "url": request.build_absolute_uri(f"/invite/{raw}/")}
    return _member_page(request, admin, target, invitation=invitation)


@member_page
@require_POST
def token_create_view(request: HttpRequest) -> HttpResponse:
    """A new API token for the member named in the form, shown in this answer only."""
    admin = team_admin_membership(request.user)
    target = team_member_get(admin.tenant, request.POST.get("member", ""))
    name = request.POST.get("name", "")
    try:
        token, raw = token_create_for_member(actor=request.user, tenant=admin.tenant,
                                             username=target.user.get_username(), name=name)
    except RequestError as exc:
        return _member_page(request, admin, target, status=400, form={"name": name}, errors=_errors(exc))
    return _member_page(request, admin, target,
                        new_token={"public_id": token.public_id, "name": token.name, "token": raw})


@member_page
@require_POST
def token_revoke_view(request: HttpRequest, api_token_id: str) -> HttpResponse:
    """Revoke an API token of any member of the team."""
    admin = team_admin_membership(request.user)
    token = team_token_get(admin.tenant, api_token_id)
    token_revoke_for_member(actor=request.user, token=token)
    target = Membership.objects.select_related("user").get(user=token.user)
    t = strings(language_for_user(request.user))
    return _member_page(request, admin, target,
                        message=t["tokens_revoked"].format(token=f"{token.prefix}…", name=token.name))


@member_page
@require_http_methods(["GET", "POST"])
def rules(request: HttpRequest) -> HttpResponse:
    """The team's model access rules; (POST) a new one for a member (`member`) or a role (`role`).
    A refused rule for a member is shown again on that member's page."""
    admin = team_admin_membership(request.user)
    if request.method == "GET":
        return _rules_page(request, admin)
    form = {field: request.POST.get(field, "") for field in RULE_FIELDS}
    target = team_member_get(admin.tenant, form["member"]) if form["member"] else None
    t = strings(language_for_user(request.user))
    try:
        rule = model_rule_add(actor=request.user, tenant=admin.tenant, kind=form["kind"], pattern=form["pattern"],
                              effect=form["effect"], username=form["member"], role=form["role"])
    except RequestError as exc:
        if target is not None:
            return _member_page(request, admin, target, status=400, form=form, errors=_errors(exc))
        return _rules_page(request, admin, status=400, form=form, errors=_errors(exc))
    message = t["team_rule_added"].format(rule=f"{rule.effect} {rule.kind} {rule.pattern}")
    if target is not None:
        return _member_page(request, admin, target, message=message)
    return _rules_page(request, admin, message=message)


@member_page
@require_POST
def rule_delete_view(request: HttpRequest, rule_id: str) -> HttpResponse:
    admin = team_admin_membership(request.user)
    rule = team_rule_get(admin.tenant, rule_id)
    model_rule_delete(actor=request.user, rule=rule)
    t = strings(language_for_user(request.user))
    message = t["team_rule_deleted"].format(rule=f"{rule.effect} {rule.kind} {rule.pattern}")
    if rule.user_id is not None:
        return _member_page(request, admin, team_member_get(admin.tenant, rule.user.get_username()), message=message)
    return _rules_page(request, admin, message=message)


@member_page
@require_http_methods(["GET"])
def jobs(request: HttpRequest) -> HttpResponse:
    """The team's recent jobs, times in the tenant's time zone."""
    admin = team_admin_membership(request.user)
    return _render(request, "frontend/team_jobs.html", {"membership": admin, "jobs": team_jobs(admin.tenant)})


@member_page
@require_http_methods(["GET"])
def audit(request: HttpRequest) -> HttpResponse:
    """The team's audit log: who did what, when, before and after."""
    admin = team_admin_membership(request.user)
    entries = [
        {"entry": entry, "before": _json(entry.before), "after": _json(entry.after)} for entry in team_audit(admin.tenant)
    ]
    return _render(request, "frontend/team_audit.html", {"membership": admin, "entries": entries})


def _json(value: object) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Public: the invited member sets their password once and is signed in. An unknown, used or
    expired link is a 404 page that says so."""
    opened = invitation_open(token)
    if opened is None:
        return render(request, "frontend/invite.html", {"t": strings("en"), "gone": True}, status=404)
    t = strings(language_for_user(opened.user))
    context = {"t": t, "invitation": opened, "errors": {}}
    if request.method == "GET":
        return render(request, "frontend/invite.html", context)
    password, again = request.POST.get("password", ""), request.POST.get("password_again", "")
    if password != again:
        context["errors"] = {"password_again": t["invite_mismatch"]}
        return render(request, "frontend/invite.html", context, status=400)
    try:
        user = invitation_accept(raw_token=token, password=password)
    except RequestError as exc:
        context["errors"] = _errors(exc)
        return render(request, "frontend/invite.html", context, status=404 if exc.field == "token" else 400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return render(request, "frontend/invite.html", {"t": t, "accepted": True, "user": user})
