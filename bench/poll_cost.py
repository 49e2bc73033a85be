"""A poll's CPU in-process, before and after the queue snapshot and the one-row job lookup (issue 19, item 2).

`bench/api_load.py` measures polls through daphne on a loaded machine, where the machine's share
of a p99 can swamp what a poll itself costs. This measures the poll alone: Django's sync handler
(`django.test.Client`, no server, no network) on a throw-away SQLite database, a token-authenticated
`GET /api/v1/jobs/<id>` of a queued job and `GET /sdapi/v1/progress` of a member whose jobs all
wait, with one live worker busy, `--queued` jobs queued and `--finished` in the fair-share horizon.

Three modes, alternated for `--rounds` rounds of `--polls` polls each, in this one process:

  * before: `ATELIER_QUEUE_STATE_TTL_SECONDS=0` (every poll re-reads the queue, as before the
    snapshot) and the job found by the previous lookup (the OR of the caller's jobs and their
    tenant's, `jobs_visible_to`), patched into the native view for this mode only;
  * snapshot: the settings' default TTL (1 s), the previous lookup;
  * after: the default TTL and `job_get_for_user` as it is.

Printed per mode and kind: the median CPU time of a poll over the rounds (`time.thread_time`) and its
SQL queries, the load average, and a final JSON line.

    .venv/bin/python bench/poll_cost.py
    .venv/bin/python bench/poll_cost.py --queued 100 --finished 300 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="atelier-poll-cost-")
os.environ.pop("DATABASE_URL", None)  # a throw-away SQLite database, never a shared one
os.environ.pop("REDIS_URL", None)


MODES = ("before", "snapshot", "after")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queued", type=int, default=15, help="jobs queued (the docs' profile had 15)")
    parser.add_argument("--finished", type=int, default=45, help="jobs finished in the fair-share horizon")
    parser.add_argument("--polls", type=int, default=200, help="polls per mode, kind and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    import inference.api.native as native
    from a1111.generation import parse_generation_request
    from inference.dispatch import dispatch_pending
    from inference.models import Job, Worker
    from inference.selectors import job_get_for_user, jobs_visible_to
    from inference.services import job_submit
    from inference.transitions import worker_register
    from runtime.tiny.model import write_tiny_checkpoint
    from tenants.models import Membership
    from tenants.services import member_create, tenant_create, token_create

    call_command("migrate", verbosity=0)
    write_tiny_checkpoint(settings.ATELIER_PUBLIC_MODEL_DIRS["Stable-diffusion"] / settings.ATELIER_TINY_MODEL_NAME)
    studio_a, studio_b = tenant_create(slug="studio-a"), tenant_create(slug="studio-b")
    users = {
        "alice": member_create(tenant=studio_a, username="alice", password="pw", role=Membership.Role.ADMIN),
        "bob": member_create(tenant=studio_a, username="bob", password="pw"),
        "charlie": member_create(tenant=studio_b, username="charlie", password="pw"),
    }
    tokens = {name: token_create(user=user)[1] for name, user in users.items()}

    def submit(name: str, index: int) -> Job:
        # Sizes vary so the scheduler cannot batch them all onto the one worker.
        width = 64 * (1 + index % 6)
        return job_submit(user=users[name], request=parse_generation_request(
            {"prompt": f"poll {index}", "steps": 2, "width": width, "height": 64}))

    names = list(users)
    finished = [submit(names[i % 3], i) for i in range(args.finished)]  # no worker yet: all stay queued
    now = timezone.now()
    Job.objects.filter(pk__in=[job.pk for job in finished]).update(
        status=Job.Status.SUCCEEDED, started_at=now, finished_at=now, gpu_seconds=1.0)
    worker = worker_register(name="bench@poll-cost", device="cpu", device_memory_bytes=None, max_batch=1)
    busy = submit("charlie", 10_000)
    dispatch_pending()  # the one worker takes one job (max_batch 1) and is busy
    queued = [submit(names[i % 2], args.finished + i) for i in range(args.queued)]  # alice's and bob's
    watched = next(job for job in reversed(queued) if Job.objects.get(pk=job.pk).status == Job.Status.QUEUED)
    counts = {status: Job.objects.filter(status=status).count() for status in ("queued", "dispatched", "succeeded")}

    def old_job_get_for_user(user, public_id: str):
        return jobs_visible_to(user).select_related("owner", "worker").filter(public_id=public_id).first()

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]  # the test client's host
    client = Client()
    kinds = {
        "job": (f"/api/v1/jobs/{watched.public_id}", tokens[watched.owner.username]),
        "progress": ("/sdapi/v1/progress", tokens["bob"]),
    }

    def run(mode: str, path: str, token: str) -> tuple[float, int]:
        settings.ATELIER_QUEUE_STATE_TTL_SECONDS = 0.0 if mode == "before" else 1.0
        native.job_get_for_user = job_get_for_user if mode == "after" else old_job_get_for_user
        Worker.objects.filter(pk=worker.pk).update(last_heartbeat=timezone.now())  # stays live
        cache.clear()
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        warm = client.get(path, **headers)
        assert warm.status_code == 200, (path, warm.status_code, warm.content[:300])
        executed: list[str] = []  # counted by a wrapper: the request's start resets connection.queries

        def count(execute, sql, params, many, context):
            executed.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            client.get(path, **headers)
        started = time.thread_time()
        for _ in range(args.polls):
            client.get(path, **headers)
        return (time.thread_time() - started) / args.polls * 1000, len(executed)

    load_before = loadavg()
    samples: dict[tuple[str, str], list[float]] = {}
    query_counts: dict[tuple[str, str], int] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            for kind, (path, token) in kinds.items():
                cpu_ms, n_queries = run(mode, path, token)
                samples.setdefault((mode, kind), []).append(cpu_ms)
                query_counts[(mode, kind)] = n_queries
    native.job_get_for_user = job_get_for_user
    load_after = loadavg()

    print(f"jobs: {counts}, polled job: {watched.public_id} ({watched.owner.username}), worker busy with {busy.public_id}")
    print(f"{'kind':<10}" + "".join(f"{mode + ' ms CPU (queries)':>28}" for mode in MODES) + f"{'before/after':>14}")
    result: dict[str, object] = {"queued": counts["queued"], "finished": counts["succeeded"], "polls": args.polls,
                                 "rounds": args.rounds, "loadavg": f"{load_before} -> {load_after}"}
    for kind in kinds:
        medians = {mode: statistics.median(samples[(mode, kind)]) for mode in MODES}
        print(f"{kind:<10}" + "".join(f"{medians[mode]:>21.2f} ({query_counts[(mode, kind)]:>2}) " for mode in MODES)
              + f"{medians['before'] / medians['after']:>14.2f}")
        result[kind] = {f"{mode}_ms": round(medians[mode], 2) for mode in MODES} | {
            f"{mode}_queries": query_counts[(mode, kind)] for mode in MODES}
    print(f"load average: {load_before} -> {load_after}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
