"""The audit log: every admin action (a tenant admin's on the Team page, an operator's in admin
or the API) writes one `AuditEntry` with who, what, when, and the object before and after.

Write it in the same transaction as the change it records, so an action is never done without
its entry or logged without being done. Entries are append-only: no view edits or deletes them.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import models

from tenants.models import AuditEntry, Tenant


def snapshot(obj: models.Model | None, fields: Iterable[str]) -> dict | None:
    """The named fields of `obj` as JSON-safe values (None for no object): an entry's before/after."""
    if obj is None:
        return None
    values: dict = {}
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, models.Model):
            value = str(value)
        elif isinstance(value, dt.datetime | dt.date):
            value = value.isoformat()
        elif isinstance(value, decimal.Decimal):
            value = str(value)
        values[name] = value
    return values


def audit_record(
    *, actor: AbstractBaseUser | None, action: str, target: str, tenant: Tenant | None = None,
    before: dict | None = None, after: dict | None = None, reason: str = "",
) -> AuditEntry:
    """Record one admin action. `action` is a dotted verb ('member.add', 'limits.set',
    'token.revoke', 'usage.adjust'); `target` names the object as a person would ('member alice')."""
    return AuditEntry.objects.create(
        actor=actor if actor is not None and actor.pk else None,
        actor_name=actor.get_username() if actor is not None else "system",
        tenant=tenant, action=action, target=target[:300], before=before, after=after, reason=reason,
    )
