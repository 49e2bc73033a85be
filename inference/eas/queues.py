"""The queue services of the EAS async service: plain synchronous functions (keyword-only).

The HTTP views (`inference/eas/views.py`) and the watch websocket (`inference/eas/watch.py`) only
parse, authenticate and call these. Semantics follow the official SDK
(`/work/shared/reference/eas_queue.md` §3, §4.5, §6, §9):

* each queue has its own index sequence (from 1, never reused, not even after a truncate);
* a sink item is delivered to one consumer (`"<group>.<consumer>"`) at a time; a consumer holds at
  most `window` delivered, uncommitted items; `commit` (or `delete`) removes items, `auto_commit`
  removes them as they are delivered; a consumer that leaves without committing has its items
  released to the next one (`queue_release`);
* the input queue is consumed by the platform itself (each item becomes a Job, see `bridge.py`):
  `queue_deliver` hands input items to no outside consumer.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from inference.eas.models import (
    EasConsumer,
    EasItem,
    EasService,
    EasServiceToken,
    service_name_validator,
)
from tenants.selectors import tenant_for_user
from tenants.services import token_digest

INPUT = EasItem.Queue.INPUT
SINK = EasItem.Queue.SINK
QUEUES = (INPUT, SINK)

TOKEN_PREFIX = "eas_"
USER_HEADER = "X-EAS-QueueService-Redis-Uid"
GROUP_HEADER = "X-EAS-QueueService-Redis-Gid"
PRIORITY_HEADER = "X-EAS-QueueService-Priority"
# A consumer not seen for this long (a web process that died mid-watch, an HTTP `get` without
# auto-delete whose caller never commits) has its uncommitted items released to the others.
CONSUMER_EXPIRY = timedelta(minutes=5)
# A token's `last_used_at` is written at most this often.
TOKEN_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Frame:
    """One item as the SDK's `DataFrame` carries it."""

    index: int
    tags: dict[str, str]
    data: bytes
    message: str = ""


class EasAuthError(Exception):
    """Unknown service, or a wrong or revoked token (one error for both: no service enumeration)."""


class EasError(Exception):
    """A refused queue call, with the HTTP status the adapter answers."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EasPayloadTooLarge(EasError):
    status = 413


class EasQueueFull(EasError):
    status = 429


# --- services and tokens ------------------------------------------------------------------------


def service_create(
    *, name: str, owner: AbstractUser, default_checkpoint: str = "", max_payload_bytes: int | None = None,
    max_queue_length: int | None = None, max_sink_uncommitted: int | None = None,
    result_retention_hours: int | None = None,
) -> EasService:
    """A service of `owner`'s tenant, run as and billed to `owner` (a member of a tenant).
    `ValidationError` naming the field for a bad or taken name, or an owner outside any tenant."""
    try:
        service_name_validator(name)
    except ValidationError as exc:
        raise ValidationError({"name": exc.messages}) from None
    tenant = tenant_for_user(owner)
    if tenant is None:
        raise ValidationError({"owner": f"{owner.get_username()} is not a member of any tenant"})
    if EasService.objects.filter(name=name).exists():
        raise ValidationError({"name": f"a service named {name!r} exists already"})
    limits = {
        key: value for key, value in {
            "max_payload_bytes": max_payload_bytes, "max_queue_length": max_queue_length,
            "max_sink_uncommitted": max_sink_uncommitted, "result_retention_hours": result_retention_hours,
        }.items() if value is not None
    }
    return EasService.objects.create(
        name=name, owner=owner, tenant=tenant, default_checkpoint=default_checkpoint, **limits
    )


def service_token_create(*, service: EasService, name: str = "default") -> tuple[EasServiceToken, str]:
    """Issue a token of `service`. The raw token is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = EasServiceToken.objects.create(service=service, name=name, prefix=raw[:12], digest=token_digest(raw))
    return token, raw


def service_token_revoke(*, token: EasServiceToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def service_authenticate(*, name: str, authorization: str) -> EasService:
    """The service `name`, if `authorization` (the raw header: the raw token, as the SDK sends it,
    or "Bearer <token>") is one of its active tokens; `EasAuthError` otherwise."""
    raw = authorization.strip()
    scheme, _, rest = raw.partition(" ")
    if scheme.lower() == "bearer":
        raw = rest.strip()
    if not raw or " " in raw:
        raise EasAuthError("unauthorized")
    token = (
        EasServiceToken.objects.select_related("service", "service__owner")
        .filter(digest=token_digest(raw), revoked_at__isnull=True, service__name=name, service__owner__is_active=True)
        .first()
    )
    if token is None:
        raise EasAuthError("unauthorized")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= TOKEN_LAST_USED_RESOLUTION:
        EasServiceToken.objects.filter(pk=token.pk).update(last_used_at=now)  # not one write per call
    return token.service


# --- put, deliver, commit -------------------------------------------------------------------------


def _check_queue(queue: str) -> None:
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")


def _live_items(service: EasService, queue: str):
    items = EasItem.objects.filter(service=service, queue=queue)
    return items.exclude(status=EasItem.Status.DONE) if queue == INPUT else items


def queue_put(
    *, service: EasService, queue: str, data: bytes, tags: Mapping[str, str] | None = None, route: str = "",
    priority: int = 0, base_url: str = "",
) -> EasItem:
    """Append an item with the queue's next index; its tags get `requestId` (a new id).

    `EasPayloadTooLarge` past the service's payload limit, `EasQueueFull` when the queue holds
    its maximum. An input item waits until the pump (`bridge.eas_pump`) submits it as a Job.
    """
    _check_queue(queue)
    if len(data) > service.max_payload_bytes:
        raise EasPayloadTooLarge(
            f"the payload is {len(data)} bytes, over this service's limit of {service.max_payload_bytes} bytes: "
            "send images as URLs (image_link) and ask for save_dir results"
        )
    return _append(
        service=service, queue=queue, data=data, tags=tags, route=route, priority=priority, base_url=base_url,
        request_id=str(uuid.uuid4()), check_length=True,
    )


def result_append(*, service: EasService, data: bytes, tags: Mapping[str, str], request_id: str) -> EasItem:
    """A result of the platform itself into the sink: never refused (its size is the bridge's
    concern, its room was reserved by back-pressure), `tags` kept as given (with `requestId`)."""
    return _append(service=service, queue=SINK, data=data, tags=tags, request_id=request_id, check_length=False)


def _append(
    *, service: EasService, queue: str, data: bytes, tags: Mapping[str, str] | None, request_id: str,
    check_length: bool, route: str = "", priority: int = 0, base_url: str = "",
) -> EasItem:
    with transaction.atomic():
        locked = EasService.objects.select_for_update().get(pk=service.pk)
        if check_length and _live_items(locked, queue).count() >= locked.max_queue_length:
            raise EasQueueFull(
                f"the {queue} queue of {locked.name} holds {locked.max_queue_length} items, its maximum: "
                "commit or delete results, or wait for requests to finish"
            )
        field = "input_last_index" if queue == INPUT else "sink_last_index"
        index = getattr(locked, field) + 1
        setattr(locked, field, index)
        locked.save(update_fields=[field])
        setattr(service, field, index)
        item = EasItem.objects.create(
            service=locked, queue=queue, index=index, request_id=request_id, route=route,
            tags={**{str(k): str(v) for k, v in (tags or {}).items()}, "requestId": request_id},
            data=bytes(data), priority=priority, base_url=base_url,
            status=EasItem.Status.WAITING if queue == INPUT else "",
        )
        if queue == INPUT:
            transaction.on_commit(lambda: _pump_later(service.pk))
    return item


def _pump_later(service_pk: int) -> None:
    from inference.eas.bridge import eas_pump_safely

    eas_pump_safely(service_id=service_pk)


def _frame(item: EasItem, *, index_only: bool = False) -> Frame:
    return Frame(index=item.index, tags=dict(item.tags), data=b"" if index_only else bytes(item.data))


def queue_deliver(
    *, service: EasService, queue: str, consumer: str, window: int, start_index: int, auto_commit: bool
) -> list[Frame]:
    """Claim the oldest undelivered items with index >= `start_index` for `consumer`: at most
    `window` minus what it holds uncommitted (with `auto_commit`, `window` at a time, removed as
    they are handed over). Returns them in index order; [] for the input queue (the platform is
    its consumer). A `start_index` below 1 means from the head (see `queue_tail_index` for -1)."""
    _check_queue(queue)
    if queue == INPUT:
        return []
    window = max(int(window), 1)
    with transaction.atomic():
        items = EasItem.objects.filter(service=service, queue=queue)
        held = 0 if auto_commit else items.filter(consumer=consumer).count()
        room = window - held
        if room <= 0:
            return []
        claimed = list(
            items.filter(consumer="", index__gte=max(int(start_index), 0))
            .order_by("index")
            .select_for_update(skip_locked=True)[:room]
        )
        if not claimed:
            return []
        pks = [item.pk for item in claimed]
        if auto_commit:
            EasItem.objects.filter(pk__in=pks).delete()
        else:
            EasItem.objects.filter(pk__in=pks).update(consumer=consumer, delivered_at=timezone.now())
        if auto_commit and queue == SINK:
            transaction.on_commit(lambda: _pump_later(service.pk))
    return [_frame(item) for item in claimed]


def queue_release(*, service: EasService, queue: str, consumer: str) -> int:
    """`consumer` left without committing: its delivered items become undelivered (redelivered to
    the next consumer, or to it when it comes back). Returns how many."""
    _check_queue(queue)
    return EasItem.objects.filter(service=service, queue=queue, consumer=consumer).update(consumer="", delivered_at=None)


def consumer_seen(
    *, service: EasService, queue: str, consumer: str, window: int, auto_commit: bool, connected: bool
) -> None:
    """Record a consumer (for `attributes`' consumers.* keys): Running while connected, Exit after."""
    _check_queue(queue)
    EasConsumer.objects.update_or_create(
        service=service, queue=queue, name=consumer,
        defaults={
            "window": max(int(window), 0), "auto_commit": bool(auto_commit), "last_seen": timezone.now(),
            "status": EasConsumer.Status.RUNNING if connected else EasConsumer.Status.EXIT,
        },
    )


def queue_tail_index(*, service: EasService, queue: str) -> int:
    """The index the next item of `queue` will get (a watch from `_index_=-1` starts there)."""
    _check_queue(queue)
    service = EasService.objects.only("input_last_index", "sink_last_index").get(pk=service.pk)
    return (service.input_last_index if queue == INPUT else service.sink_last_index) + 1


def queue_get(
    *, service: EasService, queue: str, index: int = 0, length: int = 1, request_id: str = "",
    tags: Mapping[str, str] | None = None, auto_delete: bool = True, consumer: str = "",
) -> list[Frame]:
    """Read up to `length` items with index >= `index` (0: from the head), matching `request_id`
    and every tag given, in index order. With `auto_delete` sink items are removed as they are
    read (input items never: the platform runs them). Items delivered to another consumer and not
    committed are skipped; without `auto_delete` the items read count as delivered to `consumer`."""
    _check_queue(queue)
    length = min(max(int(length), 1), 1000)
    with transaction.atomic():
        items = _live_items(service, queue).filter(index__gte=max(int(index), 0))
        items = items.filter(Q(consumer="") | Q(consumer=consumer)) if queue == SINK else items
        if request_id:
            items = items.filter(request_id=request_id)
        found = []
        for item in items.order_by("index").select_for_update(skip_locked=True).iterator(chunk_size=200):
            if all(item.tags.get(key) == value for key, value in (tags or {}).items()):
                found.append(item)
                if len(found) >= length:
                    break
        if found and queue == SINK:
            pks = [item.pk for item in found]
            if auto_delete:
                EasItem.objects.filter(pk__in=pks).delete()
                transaction.on_commit(lambda: _pump_later(service.pk))
            elif consumer:
                EasItem.objects.filter(pk__in=pks).update(consumer=consumer, delivered_at=timezone.now())
    return [_frame(item) for item in found]


def _remove(service: EasService, queue: str, items) -> int:
    with transaction.atomic():
        removed, _ = items.delete()
        if removed and queue == SINK:
            transaction.on_commit(lambda: _pump_later(service.pk))
    return removed


def queue_commit(*, service: EasService, queue: str, indexes: Iterable[int]) -> int:
    """The consumer is done with these items: they are removed (freeing window slots and sink room
    for waiting input items). Unknown indexes are ignored. Returns how many were removed."""
    _check_queue(queue)
    items = EasItem.objects.filter(service=service, queue=queue, index__in=list(indexes))
    if queue == INPUT:  # a submitted request runs to its end; only waiting ones can be withdrawn
        items = items.filter(status=EasItem.Status.WAITING)
    return _remove(service, queue, items)


def queue_delete(*, service: EasService, queue: str, indexes: Iterable[int]) -> int:
    """Remove these items (as `commit`; on the input queue only requests that have not started)."""
    return queue_commit(service=service, queue=queue, indexes=indexes)


def queue_truncate(*, service: EasService, queue: str, index: int) -> int:
    """Remove every item with an index below `index` (input: those not started). Returns how many."""
    _check_queue(queue)
    items = EasItem.objects.filter(service=service, queue=queue, index__lt=int(index))
    if queue == INPUT:
        items = items.filter(status=EasItem.Status.WAITING)
    return _remove(service, queue, items)


# --- reads ------------------------------------------------------------------------------------------


def queue_depths(*, service: EasService) -> dict[str, int]:
    """How many items each queue holds (input: not yet finished)."""
    return {queue: _live_items(service, queue).count() for queue in QUEUES}


def queue_attributes(*, service: EasService, queue: str) -> dict[str, str]:
    """The SDK's `attributes()`: meta.*, stream.* and consumers.* keys, every value a string."""
    _check_queue(queue)
    items = _live_items(service, queue)
    stats = items.aggregate(length=Count("pk"), first=Min("index"), last=Max("index"))
    attributes = {
        "meta.name": service.name if queue == INPUT else f"{service.name}/sink",
        "meta.backend": "atelier",
        "meta.state": "Normal",
        "meta.maxPayloadBytes": str(service.max_payload_bytes),
        "meta.header.user": USER_HEADER,
        "meta.header.group": GROUP_HEADER,
        "meta.header.priority": PRIORITY_HEADER,
        "stream.length": str(stats["length"]),
        "stream.approxMaxLength": str(service.max_queue_length),
    }
    if stats["length"]:
        attributes["stream.firstEntry"] = str(stats["first"])
        attributes["stream.lastEntry"] = str(stats["last"])
    if queue == INPUT:
        attributes["stream.waiting"] = str(items.filter(status=EasItem.Status.WAITING).count())
    pending = dict(
        items.exclude(consumer="").values_list("consumer").annotate(n=Count("pk")).values_list("consumer", "n")
    )
    now = timezone.now()
    consumers = list(EasConsumer.objects.filter(service=service, queue=queue).order_by("name"))
    for position, consumer in enumerate(consumers):
        held = pending.get(consumer.name, 0)
        slots = 0 if consumer.status != EasConsumer.Status.RUNNING else max(consumer.window - held, 0)
        prefix = f"consumers.list.[{position}]"
        attributes[prefix] = (
            f"Id: {consumer.name}, Pending: {held}, Status: {consumer.status}, "
            f"Idle: {int((now - consumer.last_seen).total_seconds())}s, Window: {consumer.window}, "
            f"Slots: {slots}, AutoCommit: {str(consumer.auto_commit).lower()}"
        )
        attributes[f"{prefix}.id"] = consumer.name
        attributes[f"{prefix}.pending"] = str(held)
        attributes[f"{prefix}.window"] = str(consumer.window)
        attributes[f"{prefix}.status"] = consumer.status
        attributes[f"{prefix}.autoCommit"] = str(consumer.auto_commit).lower()
    running = sum(1 for c in consumers if c.status == EasConsumer.Status.RUNNING)
    attributes["consumers.stats.total"] = str(len(consumers))
    attributes["consumers.status.total"] = str(running)
    return attributes


def queue_search(*, service: EasService, queue: str, index: int) -> dict[str, object]:
    """Where item `index` stands: `IsPending` (being processed: its job runs, or for the sink,
    delivered and not committed) and `WaitHeadCount` (items ahead of it still waiting).
    `{}` for an index the queue does not hold."""
    _check_queue(queue)
    item = _live_items(service, queue).select_related("job").filter(index=index).first()
    if item is None:
        return {}
    if queue == INPUT:
        from inference.models import Job

        running = item.job is not None and item.job.status == Job.Status.RUNNING
        ahead = _live_items(service, queue).filter(index__lt=index).exclude(job__status=Job.Status.RUNNING).count()
        return {"IsPending": running, "WaitHeadCount": 0 if running else ahead, "Status": item.status}
    ahead = _live_items(service, queue).filter(index__lt=index, consumer="").count()
    delivered = bool(item.consumer)
    result: dict[str, object] = {"IsPending": delivered, "WaitHeadCount": 0 if delivered else ahead}
    if delivered:
        result["ConsumerId"] = item.consumer
    return result


# --- housekeeping (the sweeper's pass) ---------------------------------------------------------------


def queues_expire(*, now=None) -> int:
    """Drop sink results past their service's retention, and release the items of consumers not
    seen for `CONSUMER_EXPIRY` (marking them Exit). Returns how many items changed."""
    now = now or timezone.now()
    changed = 0
    for service in EasService.objects.all().only("pk", "result_retention_hours"):
        cutoff = now - timedelta(hours=service.result_retention_hours)
        changed += EasItem.objects.filter(service=service, queue=SINK, created_at__lt=cutoff).delete()[0]
    stale = EasConsumer.objects.filter(last_seen__lt=now - CONSUMER_EXPIRY)
    for consumer in stale.filter(status=EasConsumer.Status.RUNNING).select_related("service"):
        changed += queue_release(service=consumer.service, queue=consumer.queue, consumer=consumer.name)
    stale.update(status=EasConsumer.Status.EXIT)
    # Items an HTTP `get` (without auto-delete) handed to a caller that never committed them.
    stale_delivered = EasItem.objects.filter(queue=SINK, delivered_at__lt=now - CONSUMER_EXPIRY)
    live = set(EasConsumer.objects.filter(status=EasConsumer.Status.RUNNING).values_list("service_id", "name"))
    for item in stale_delivered.only("pk", "service_id", "consumer"):
        if (item.service_id, item.consumer) not in live:
            changed += EasItem.objects.filter(pk=item.pk).update(consumer="", delivered_at=None)
    return changed
