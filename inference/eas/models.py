"""The rows of the EAS queue service: services, their tokens, queue items and consumers.

Items live in the database (durable: they survive a restart of the web process and of Redis).
Each service has two queues, "input" and "sink", each with its own index sequence (uint64, from 1,
never reused, kept on the service row). An input item waits (back-pressure or the owner's queued
jobs cap), is submitted as a `Job`, and is removed when that job's result lands in the sink. A
sink item is undelivered (`consumer == ""`), delivered to one consumer and not yet committed, or
gone (committed, deleted, truncated, or past the service's result retention).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

service_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    "Use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)

DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_QUEUE_LENGTH = 10_000
DEFAULT_MAX_SINK_UNCOMMITTED = 1_000
DEFAULT_RESULT_RETENTION_HOURS = 72


def new_service_id() -> str:
    return "eas_" + secrets.token_urlsafe(12)


class EasService(models.Model):
    """A named asynchronous service. Its requests run as `owner` and are billed to them."""

    public_id = models.CharField(max_length=32, unique=True, default=new_service_id, editable=False)
    name = models.CharField(max_length=64, unique=True, validators=[service_name_validator])
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="eas_services")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="eas_services")
    default_checkpoint = models.CharField(
        max_length=500, blank=True, help_text="Used when a request names no sd_model_checkpoint; empty: the owner's."
    )
    max_payload_bytes = models.PositiveIntegerField(
        default=DEFAULT_MAX_PAYLOAD_BYTES, help_text="A bigger put is refused with 413 (meta.maxPayloadBytes)."
    )
    max_queue_length = models.PositiveIntegerField(
        default=DEFAULT_MAX_QUEUE_LENGTH, help_text="Items a queue holds at most (stream.approxMaxLength)."
    )
    max_sink_uncommitted = models.PositiveIntegerField(
        default=DEFAULT_MAX_SINK_UNCOMMITTED,
        help_text="Back-pressure: input items wait while the sink holds this many results (plus those running).",
    )
    result_retention_hours = models.PositiveIntegerField(
        default=DEFAULT_RESULT_RETENTION_HOURS, help_text="Uncommitted results older than this are dropped."
    )
    input_last_index = models.BigIntegerField(default=0, editable=False)
    sink_last_index = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class EasServiceToken(models.Model):
    """A token of one service (the SDK's `set_token`). Only its SHA-256 is stored."""

    service = models.ForeignKey(EasService, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to recognise a token.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="When a call last authenticated with it (to the minute)."
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name}, {self.service})"


class EasItem(models.Model):
    class Queue(models.TextChoices):
        INPUT = "input"
        SINK = "sink"

    class Status(models.TextChoices):  # input items only
        WAITING = "waiting"  # back-pressure, or the owner's queued-jobs cap
        SUBMITTED = "submitted"  # a Job runs it
        DONE = "done"  # its result is in the sink

    service = models.ForeignKey(EasService, on_delete=models.CASCADE, related_name="items")
    queue = models.CharField(max_length=8, choices=Queue.choices)
    index = models.BigIntegerField()
    request_id = models.CharField(max_length=64, db_index=True)
    route = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    data = models.BinaryField()
    priority = models.SmallIntegerField(default=0)
    base_url = models.CharField(max_length=500, blank=True, help_text="Where the put came in: image URLs use it.")
    status = models.CharField(max_length=16, choices=Status.choices, blank=True)
    job = models.ForeignKey("inference.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="eas_items")
    # an item whose body names a group script (`script_name`: X/Y/Z plot, prompt matrix, …) runs as a
    # job group; its result is written once the group has settled
    job_group = models.ForeignKey(
        "inference.JobGroup", null=True, blank=True, on_delete=models.SET_NULL, related_name="eas_items"
    )
    consumer = models.CharField(max_length=200, blank=True, help_text='"<group>.<consumer>"; "" = undelivered.')
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("service", "queue", "index")
        constraints = (models.UniqueConstraint(fields=("service", "queue", "index"), name="eas_item_unique_index"),)
        indexes = (
            models.Index(fields=("service", "queue", "consumer", "index")),
            models.Index(fields=("service", "queue", "status", "index")),
        )

    def __str__(self) -> str:
        return f"{self.service}/{self.queue}#{self.index}"


class EasConsumer(models.Model):
    """A consumer of a queue as `attributes` lists it: `<group>.<consumer>`, window, auto-commit."""

    class Status(models.TextChoices):
        RUNNING = "Running"
        EXIT = "Exit"

    service = models.ForeignKey(EasService, on_delete=models.CASCADE, related_name="consumers")
    queue = models.CharField(max_length=8, choices=EasItem.Queue.choices)
    name = models.CharField(max_length=200)
    window = models.PositiveIntegerField(default=1)
    auto_commit = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    last_seen = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("service", "queue", "name")
        constraints = (models.UniqueConstraint(fields=("service", "queue", "name"), name="eas_consumer_unique_name"),)

    def __str__(self) -> str:
        return f"{self.service}/{self.queue} {self.name}"
