"""`manage.py create_token USERNAME [--name NAME]`: print a new API token for a user."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tenants.services import token_create


class Command(BaseCommand):
    help = "Issue a new API token for a user and print it (it is stored hashed, shown only now)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        _, raw = token_create(user=user, name=name)
        self.stdout.write(raw)
