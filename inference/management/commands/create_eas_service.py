"""`manage.py create_eas_service NAME --owner USERNAME`: an EAS async service and its first token.

Prints the endpoint (what the SDK's `QueueClient(endpoint, ...)` takes), the queue names and the
token (shown once: only its hash is stored).
"""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from inference.eas.queues import service_create, service_token_create


class Command(BaseCommand):
    help = "Create a PAI-EAS-compatible asynchronous service run as (and billed to) USERNAME; print its token."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The service name (the SDK's queue name), e.g. sd_async")
        parser.add_argument("--owner", required=True, help="The member the requests run as and are billed to")
        parser.add_argument("--checkpoint", default="", help="Default checkpoint when a request names none")
        parser.add_argument("--max-payload-bytes", type=int, default=None)
        parser.add_argument("--max-queue-length", type=int, default=None)
        parser.add_argument("--max-sink-uncommitted", type=int, default=None)
        parser.add_argument("--result-retention-hours", type=int, default=None)
        parser.add_argument("--host", default="127.0.0.1:8000", help="host:port the endpoint line shows")

    def handle(self, *args, name: str, owner: str, checkpoint: str, host: str, **options):
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"no user named {owner!r}")
        try:
            service = service_create(
                name=name, owner=user, default_checkpoint=checkpoint,
                max_payload_bytes=options["max_payload_bytes"], max_queue_length=options["max_queue_length"],
                max_sink_uncommitted=options["max_sink_uncommitted"],
                result_retention_hours=options["result_retention_hours"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        _, token = service_token_create(service=service)
        self.stdout.write(f"service: {service.name}\n")
        self.stdout.write(f"endpoint: {host}\n")
        self.stdout.write(f"url: http://{host}/api/predict/{service.name}\n")
        self.stdout.write(f"input queue: {service.name}/sdapi/v1/txt2img (or {service.name}/sdapi/v1/img2img)\n")
        self.stdout.write(f"sink queue: {service.name}/sink\n")
        self.stdout.write(f"token: {token}\n")
