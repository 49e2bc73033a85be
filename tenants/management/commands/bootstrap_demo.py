"""`manage.py bootstrap_demo`: the demo tenants, members and operator, idempotently.

Each run resets the demo passwords, revokes the previous demo tokens and prints new ones
(tokens are stored hashed, so the old ones cannot be shown again).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand
from django.db import transaction

from tenants.models import ApiToken, Membership
from tenants.services import member_create, operator_create, tenant_create, token_create, token_revoke

DEMO_TOKEN_NAME = "demo"
DEMO_MEMBERS = [
    # (tenant, username, role)
    ("studio-a", "alice", Membership.Role.ADMIN),
    ("studio-a", "bob", Membership.Role.MEMBER),
    ("studio-b", "charlie", Membership.Role.MEMBER),
]
DEMO_OPERATOR = "admin"


def demo_password(username: str) -> str:
    return f"{username}-atelier-demo"


class Command(BaseCommand):
    help = "Create the demo tenants (studio-a: alice, bob; studio-b: charlie) and operator admin."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print credentials as one JSON object")

    @transaction.atomic
    def handle(self, *args, **options):
        credentials: dict[str, dict[str, str]] = {}
        users = []
        for tenant_slug, username, role in DEMO_MEMBERS:
            tenant = tenant_create(slug=tenant_slug, name=tenant_slug.replace("-", " ").title())
            users.append(member_create(tenant=tenant, username=username, password=demo_password(username), role=role))
        users.append(operator_create(username=DEMO_OPERATOR, password=demo_password(DEMO_OPERATOR)))
        for user in users:
            for old in ApiToken.objects.filter(user=user, name=DEMO_TOKEN_NAME, revoked_at__isnull=True):
                token_revoke(token=old)
            _, raw = token_create(user=user, name=DEMO_TOKEN_NAME)
            credentials[user.username] = {"password": demo_password(user.username), "token": raw}

        if options["json"]:
            self.stdout.write(json.dumps(credentials))
            return
        self.stdout.write("Demo accounts (username / password / API token):")
        for username, creds in credentials.items():
            self.stdout.write(f"  {username:8} {creds['password']:24} {creds['token']}")
