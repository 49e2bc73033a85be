"""`manage.py workspaces [--json]`: every member's workspace process as the web process last recorded it."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from frontend.models import WorkspaceSession


def _iso(value) -> str | None:
    return value.isoformat() if value else None


class Command(BaseCommand):
    help = "List workspace sessions (user, status, pid, port, restarts)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object keyed by username")

    def handle(self, *args, **options):
        rows = WorkspaceSession.objects.select_related("user").order_by("user__username")
        sessions = {
            row.user.username: {
                "user_id": row.user_id,
                "status": row.status,
                "pid": row.pid,
                "port": row.port,
                "restarts": row.restarts,
                "stop_reason": row.stop_reason,
                "started_at": _iso(row.started_at),
                "ready_at": _iso(row.ready_at),
                "last_seen_at": _iso(row.last_seen_at),
                "stopped_at": _iso(row.stopped_at),
            }
            for row in rows
        }
        if options["json"]:
            self.stdout.write(json.dumps(sessions))
            return
        for username, s in sessions.items():
            self.stdout.write(
                f"{username:16} {s['status']:9} pid={s['pid']} port={s['port']} restarts={s['restarts']} {s['stop_reason']}"
            )
