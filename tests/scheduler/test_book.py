"""The policy's index kept between calls (inference/scheduler/book.py) decides as a fresh one does.

On random queues, workers and fair-share states (Hypothesis), the policy over a plain sequence (a
new index each call) and the policy over one `QueueIndex` kept through a run of calls, with jobs
added and removed between them (what the dispatcher's memory does), must give the same plan.
(When the index was introduced, both were also checked against a frozen copy of the policy before
it, in the commit that added this file: the decisions did not change.)
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.scheduler import FairShareState, PendingJob, PolicyConfig, WorkerState, plan_assignments
from inference.scheduler.book import QueueIndex

NOW = 10_000.0
MODELS = ["", "m0", "m1", "m2", "m3"]


@st.composite
def pending_jobs(draw, first_id: int, count: int) -> list[PendingJob]:
    """Jobs whose users keep one tenant, tenants one weight, batch keys one model (as the dispatcher's)."""
    jobs = []
    for job_id in range(first_id, first_id + count):
        owner = draw(st.integers(1, 12))
        tenant = owner % 4
        model = draw(st.sampled_from(MODELS))
        jobs.append(PendingJob(
            job_id=job_id, owner_id=owner, tenant_id=tenant,
            submitted_at=NOW - draw(st.floats(0.0, 150.0)),
            model_key=model, network_key=draw(st.sampled_from(["", "lora-a"])),
            batch_key=f"{model}|{draw(st.integers(0, 2))}",
            images=draw(st.sampled_from([1, 1, 2, 4, 9])), steps=draw(st.sampled_from([1, 20, 30])),
            pixels=draw(st.sampled_from([64 * 64, 512 * 512, 1024 * 1024])),
            priority=draw(st.integers(0, 2)), tenant_weight=1.0 + tenant,
            user_running_cap=draw(st.sampled_from([None, None, 1, 3])),
            tenant_running_cap=draw(st.sampled_from([None, None, None, 2, 6])),
        ))
    return jobs


@st.composite
def worlds(draw) -> tuple[list[WorkerState], FairShareState, PolicyConfig]:
    workers = []
    for worker_id in range(1, draw(st.integers(1, 10)) + 1):
        free = draw(st.booleans())
        workers.append(WorkerState(
            worker_id=worker_id, free=free, max_batch=draw(st.sampled_from([1, 4, 8])),
            resident_models=tuple(draw(st.lists(st.sampled_from(MODELS[1:]), max_size=2, unique=True))),
            cached_models=tuple(draw(st.lists(st.sampled_from(MODELS[1:]), max_size=3, unique=True))),
            active_networks=draw(st.sampled_from(["", "lora-a"])),
            busy_until=None if free else NOW + draw(st.floats(0.0, 20.0)),
            busy_model=None if free else draw(st.sampled_from(MODELS[1:])),
        ))
    fair = FairShareState(
        user_service=draw(st.dictionaries(st.integers(1, 12), st.floats(0.0, 200.0))),
        tenant_service=draw(st.dictionaries(st.integers(0, 3), st.floats(0.0, 500.0))),
        running_per_user=draw(st.dictionaries(st.integers(1, 12), st.integers(0, 4))),
        running_per_tenant=draw(st.dictionaries(st.integers(0, 3), st.integers(0, 10))),
    )
    config = PolicyConfig(max_running_per_user=draw(st.sampled_from([2, 8])),
                          max_running_per_tenant=draw(st.sampled_from([4, 16])),
                          max_reorder_wait_s=draw(st.sampled_from([30.0, 60.0])))
    return workers, fair, config


@settings(max_examples=200, deadline=None)
@given(pending=pending_jobs(1, 60), world=worlds())
def test_a_plan_over_an_index_is_the_plan_over_the_plain_queue(pending, world) -> None:
    workers, fair, config = world
    expected = plan_assignments(pending, workers, fair, now=NOW, config=config)
    assert plan_assignments(QueueIndex(pending), workers, fair, now=NOW, config=config) == expected


@settings(max_examples=100, deadline=None)
@given(initial=pending_jobs(1, 40), arrivals=st.lists(pending_jobs(1000, 5), min_size=1, max_size=6),
       leaves=st.lists(st.integers(0, 10_000), max_size=30), world=worlds())
def test_an_index_kept_through_arrivals_and_departures_plans_as_a_fresh_one(initial, arrivals, leaves, world) -> None:
    workers, fair, config = world
    index = QueueIndex(initial)
    queue = {job.job_id: job for job in initial}
    for step, arrived in enumerate(arrivals):
        for job in arrived:  # new ids each step
            job = PendingJob(**{**job.__dict__, "job_id": job.job_id + 100 * step})
            index.add(job)
            queue[job.job_id] = job
        expected = plan_assignments(list(queue.values()), workers, fair, now=NOW, config=config)
        plan = plan_assignments(index, workers, fair, now=NOW, config=config)
        assert plan == expected
        # What the dispatcher then forgets: what it placed, and some that left behind its back.
        gone = [job_id for assignment in plan for job_id in assignment.job_ids]
        gone += [sorted(queue)[pick % len(queue)] for pick in leaves[step::len(arrivals)] if queue]
        for job_id in gone:
            index.remove(job_id)
            queue.pop(job_id, None)
    assert sorted(index.jobs) == sorted(queue)
    assert index.model_demand == QueueIndex(queue.values()).model_demand
