"""The placement policy: fair share, model affinity, batching and limits (pure, no database).

Ends with a smoke test that runs the simulator (`bench/scheduler_sim.py`) on a tiny workload.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import random
import sys
from pathlib import Path

from inference.scheduler import Assignment, FairShareState, PendingJob, PolicyConfig, WorkerState, plan_assignments

NOW = 10_000.0
NO_SERVICE = FairShareState()


def job(
    job_id: int,
    owner: int = 1,
    *,
    tenant: int = 1,
    model: str = "m1",
    lora: str = "",
    key: str | None = None,
    images: int = 1,
    waited: float = 1.0,
    priority: int = 0,
    weight: float = 1.0,
) -> PendingJob:
    return PendingJob(
        job_id=job_id,
        owner_id=owner,
        tenant_id=tenant,
        submitted_at=NOW - waited,
        model_key=model,
        network_key=lora,
        batch_key=key if key is not None else f"{model}|{lora}|{job_id}",  # unique unless given
        images=images,
        steps=20,
        pixels=512 * 512,
        priority=priority,
        tenant_weight=weight,
    )


def worker(
    worker_id: int,
    *models: str,
    free: bool = True,
    cached: tuple[str, ...] = (),
    lora: str = "",
    max_batch: int = 8,
    busy_until: float | None = None,
) -> WorkerState:
    return WorkerState(
        worker_id=worker_id,
        free=free,
        max_batch=max_batch,
        resident_models=models,
        cached_models=cached,
        active_networks=lora,
        busy_until=busy_until,
        busy_model=models[-1] if models and not free else None,
    )


def plan(
    pending: list[PendingJob],
    workers: list[WorkerState],
    fair: FairShareState = NO_SERVICE,
    config: PolicyConfig = PolicyConfig(),
) -> list[Assignment]:
    return plan_assignments(pending, workers, fair, now=NOW, config=config)


def owners(assignments: list[Assignment], pending: list[PendingJob]) -> list[int]:
    by_id = {candidate.job_id: candidate for candidate in pending}
    return [by_id[job_id].owner_id for assignment in assignments for job_id in assignment.job_ids]


# --- Fair share ------------------------------------------------------------------------------


def test_a_light_users_job_goes_before_a_heavy_users_backlog() -> None:
    heavy = [job(index, owner=1, waited=200.0 - index) for index in range(1, 101)]
    light = job(1000, owner=2, waited=0.5)
    fair = FairShareState(user_service={1: 50.0}, tenant_service={1: 50.0})
    assert plan([*heavy, light], [worker(1, "m1")], fair) == [Assignment(worker_id=1, job_ids=(1000,))]


def test_the_light_job_leads_even_when_it_shares_a_batch_with_the_heavy_user() -> None:
    heavy = [job(index, owner=1, key="k", waited=200.0 - index) for index in range(1, 101)]
    light = job(1000, owner=2, key="k", waited=0.5)
    fair = FairShareState(user_service={1: 50.0}, tenant_service={1: 50.0})
    [assignment] = plan([*heavy, light], [worker(1, "m1")], fair)
    assert assignment.job_ids[0] == 1000


def test_one_call_spreads_free_workers_over_users() -> None:
    pending = [*(job(index, owner=1) for index in range(1, 11)), job(20, owner=2, waited=0.1)]
    assignments = plan(pending, [worker(1, "m1"), worker(2, "m1")])
    assert sorted(owners(assignments, pending)) == [1, 2]


def test_the_tenant_with_less_recent_service_goes_first() -> None:
    pending = [job(1, owner=1, tenant=10, waited=50.0), job(2, owner=2, tenant=20)]
    fair = FairShareState(user_service={1: 0.0, 2: 5.0}, tenant_service={10: 100.0, 20: 10.0})
    assert plan(pending, [worker(1, "m1")], fair)[0].job_ids == (2,)


def test_tenant_service_is_divided_by_the_tenant_weight() -> None:
    pending = [job(1, owner=1, tenant=10, weight=20.0), job(2, owner=2, tenant=20)]
    fair = FairShareState(user_service={1: 0.0, 2: 5.0}, tenant_service={10: 100.0, 20: 10.0})
    assert plan(pending, [worker(1, "m1")], fair)[0].job_ids == (1,)  # 100 / 20 = 5 < 10


def test_within_a_tenant_the_user_with_less_service_goes_first() -> None:
    pending = [job(1, owner=1, waited=30.0), job(2, owner=2)]
    fair = FairShareState(user_service={1: 9.0, 2: 3.0}, tenant_service={1: 12.0})
    assert plan(pending, [worker(1, "m1")], fair)[0].job_ids == (2,)


def test_priority_orders_only_a_users_own_jobs() -> None:
    fair = FairShareState(user_service={1: 0.0, 2: 10.0})
    pending = [job(1, owner=1), job(2, owner=2, priority=100)]
    assert plan(pending, [worker(1, "m1")], fair)[0].job_ids == (1,)
    own = [job(1, owner=1, waited=30.0), job(2, owner=1, priority=5, waited=1.0)]
    assert plan(own, [worker(1, "m1")], fair)[0].job_ids == (2,)


def test_equal_priority_is_first_come_first_served() -> None:
    pending = [job(2, owner=1, waited=5.0), job(1, owner=1, waited=3.0)]
    assert plan(pending, [worker(1, "m1")])[0].job_ids == (2,)


# --- Limits ----------------------------------------------------------------------------------


def test_a_user_at_its_running_limit_gets_nothing() -> None:
    fair = FairShareState(running_per_user={1: 8}, running_per_tenant={1: 8})
    pending = [job(1, owner=1, waited=100.0), job(2, owner=2)]
    assert owners(plan(pending, [worker(1, "m1"), worker(2, "m1")], fair), pending) == [2]


def test_the_user_limit_counts_what_one_call_hands_out() -> None:
    pending = [job(index, owner=1) for index in range(1, 6)]
    config = PolicyConfig(max_running_per_user=2)
    assert len(plan(pending, [worker(index, "m1") for index in range(1, 5)], config=config)) == 2


def test_the_tenant_limit_counts_what_one_call_hands_out() -> None:
    pending = [job(1, owner=1), job(2, owner=2), job(3, owner=3), job(4, owner=4, tenant=2)]
    config = PolicyConfig(max_running_per_tenant=2)
    fair = FairShareState(user_service={4: 100.0}, tenant_service={2: 100.0})
    assignments = plan(pending, [worker(index, "m1") for index in range(1, 5)], fair, config)
    assert sorted(owners(assignments, pending)) in ([1, 2, 4], [1, 3, 4], [2, 3, 4])


def test_a_batch_stops_filling_at_the_user_limit() -> None:
    pending = [job(index, owner=1, key="k") for index in range(1, 9)]
    [assignment] = plan(pending, [worker(1, "m1")], config=PolicyConfig(max_running_per_user=3))
    assert len(assignment.job_ids) == 3


def test_a_member_s_and_a_team_s_own_running_caps_hold_within_the_config_s() -> None:
    """`user_running_jobs` / `tenant_running_jobs` (the plan's and the member's limits) ride on the
    jobs: a cap of 1 leaves the member's other jobs queued while other members go on."""
    import dataclasses

    capped = [dataclasses.replace(job(index, owner=1), user_running_cap=1) for index in (1, 2, 3)]
    others = [job(4, owner=2), job(5, owner=2)]
    workers = [worker(index, "m1") for index in range(1, 6)]
    assert sorted(owners(plan(capped + others, workers), capped + others)) == [1, 2, 2]
    fair = FairShareState(running_per_user={1: 1}, running_per_tenant={1: 1})
    assert sorted(owners(plan(capped + others, workers, fair), capped + others)) == [2, 2]  # its slot is taken
    team = [dataclasses.replace(job(index, owner=index), tenant_running_cap=2) for index in (1, 2, 3)]
    assert len(plan(team, workers)) == 2
    batch = [dataclasses.replace(job(index, owner=1, key="k"), user_running_cap=2) for index in range(1, 6)]
    [assignment] = plan(batch, [worker(1, "m1")])
    assert len(assignment.job_ids) == 2  # a batch fills up to the cap, too


# --- Model affinity --------------------------------------------------------------------------


def test_a_worker_holding_the_model_is_preferred() -> None:
    assert plan([job(1, model="m2")], [worker(1, "m1"), worker(2, "m2"), worker(3)]) == [
        Assignment(worker_id=2, job_ids=(1,), load_model=False)
    ]


def test_among_warm_workers_one_with_the_lora_active_is_preferred() -> None:
    workers = [worker(1, "m1", lora=""), worker(2, "m1", lora="detail:0.7")]
    assert plan([job(1, lora="detail:0.7")], workers)[0].worker_id == 2


def test_warm_work_goes_before_a_job_that_needs_a_load() -> None:
    cold = job(1, owner=1, model="m9", waited=20.0)
    warm = job(2, owner=2, model="m1")
    assert plan([cold, warm], [worker(1, "m1")]) == [Assignment(worker_id=1, job_ids=(2,))]


def test_a_job_that_waited_too_long_is_placed_even_if_its_model_is_cold() -> None:
    old = job(1, owner=1, model="m9", waited=61.0)
    warm = job(2, owner=2, model="m1")
    assert plan([old, warm], [worker(1, "m1")]) == [Assignment(worker_id=1, job_ids=(1,), load_model=True)]


def test_nothing_behind_an_overdue_job_passes_it() -> None:
    fair = FairShareState(user_service={1: 0.0, 2: 5.0, 3: 9.0})
    pending = [job(1, owner=1, model="m8"), job(2, owner=2, model="m9", waited=61.0), job(3, owner=3, model="m1")]
    # user 3's job is warm but comes after the overdue job in fair-share order
    assert plan(pending, [worker(1, "m1")], fair)[0].job_ids == (2,)


def test_an_overdue_job_is_placed_even_behind_a_fresher_job_of_its_model() -> None:
    fair = FairShareState(user_service={1: 0.0, 2: 5.0, 3: 9.0})
    pending = [
        job(1, owner=1, model="m9"),  # fairer, fresh, cold
        job(2, owner=2, model="m9", waited=61.0),  # overdue, same cold model, another batch key
        job(3, owner=3, model="m1"),  # warm, behind the overdue job
    ]
    assert plan(pending, [worker(1, "m1")], fair) == [Assignment(worker_id=1, job_ids=(2,), load_model=True)]


def test_jobs_held_for_a_busy_worker_do_not_hide_work_behind_them() -> None:
    busy = worker(1, "m1", free=False, busy_until=NOW + 2.0, max_batch=100)
    held = [job(index, owner=index, model="m1") for index in range(1, 61)]
    later = job(100, owner=100, model="m5", waited=0.5)
    fair = FairShareState(user_service={100: 1000.0})
    assert plan([*held, later], [busy, worker(2, "m9")], fair) == [
        Assignment(worker_id=2, job_ids=(100,), load_model=True)
    ]


def test_a_busy_warm_worker_that_frees_soon_is_waited_for() -> None:
    busy = worker(1, "m1", free=False, busy_until=NOW + 2.0)
    assert plan([job(1, model="m1")], [busy, worker(2, "m5")]) == []


def test_a_busy_warm_worker_that_frees_late_is_not_waited_for() -> None:
    busy = worker(1, "m1", free=False, busy_until=NOW + 30.0)
    expected = [Assignment(worker_id=2, job_ids=(1,), load_model=True)]
    assert plan([job(1, model="m1")], [busy, worker(2, "m5")]) == expected


def test_the_grace_period_ends_when_the_job_has_waited_too_long() -> None:
    busy = worker(1, "m1", free=False, busy_until=NOW + 2.0)
    assert plan([job(1, model="m1", waited=61.0)], [busy, worker(2, "m5")])[0].worker_id == 2


def test_only_what_the_busy_warm_worker_can_take_is_held() -> None:
    busy = worker(1, "m1", free=False, busy_until=NOW + 2.0, max_batch=2)
    pending = [job(1, owner=1, model="m1"), job(2, owner=2, model="m1"), job(3, owner=3, model="m1")]
    assert plan(pending, [busy, worker(2, "m5")]) == [Assignment(worker_id=2, job_ids=(3,), load_model=True)]


def test_the_most_wanted_cold_model_is_loaded() -> None:
    pending = [job(1, owner=1, model="m8"), *(job(10 + owner, owner=owner, model="m7") for owner in (2, 3, 4))]
    [assignment] = plan(pending, [worker(1, "m1")])
    assert assignment.load_model and assignment.job_ids == (12,)


def test_a_load_goes_where_it_evicts_nothing_wanted() -> None:
    fair = FairShareState(running_per_user={9: 8})  # user 9's m5 job waits on its limit, but wants m5
    pending = [job(1, owner=1, model="m7"), job(2, owner=9, model="m5")]
    assert plan(pending, [worker(1, "m5"), worker(2, "m6")], fair)[0].worker_id == 2


def test_a_load_goes_where_the_model_is_in_host_ram() -> None:
    workers = [worker(1, "m3"), worker(2, "m4", cached=("m7",))]
    assert plan([job(1, model="m7")], workers) == [Assignment(worker_id=2, job_ids=(1,), load_model=True)]


# --- Batching --------------------------------------------------------------------------------


def test_jobs_with_one_batch_key_from_different_users_share_a_batch() -> None:
    pending = [
        job(1, owner=1, key="k", images=1),
        job(2, owner=2, key="k", images=2),
        job(3, owner=3, key="k", images=3),
        job(4, owner=4, key="k-30-steps", images=1),
    ]
    [assignment] = plan(pending, [worker(1, "m1")])
    assert sorted(assignment.job_ids) == [1, 2, 3]


def test_a_batch_holds_at_most_max_batch_images_in_fair_share_order() -> None:
    pending = [job(owner, owner=owner, key="k") for owner in range(1, 11)]
    fair = FairShareState(user_service={owner: float(owner) for owner in range(1, 11)})
    [assignment] = plan(pending, [worker(1, "m1", max_batch=8)], fair)
    assert assignment.job_ids == (1, 2, 3, 4, 5, 6, 7, 8)


def test_a_batch_lets_users_take_turns() -> None:
    pending = [job(index, owner=1 + index % 2, key="k") for index in range(1, 11)] + [job(20, owner=3, key="k")]
    [assignment] = plan(pending, [worker(1, "m1", max_batch=3)])
    assert sorted(owners([assignment], pending)) == [1, 2, 3]


def test_a_job_larger_than_a_batch_runs_alone() -> None:
    pending = [job(1, owner=1, key="k", images=12), job(2, owner=2, key="k", images=1)]
    assignments = plan(pending, [worker(1, "m1", max_batch=8), worker(2, "m1", max_batch=8)])
    assert sorted(assignment.job_ids for assignment in assignments) == [(1,), (2,)]


def test_a_batch_never_exceeds_max_batch() -> None:
    pending = [
        job(1, owner=1, key="k", images=5),
        job(2, owner=2, key="k", images=4),
        job(3, owner=3, key="k", images=3),
    ]
    [assignment] = plan(pending, [worker(1, "m1", max_batch=8)])
    assert assignment.job_ids == (1, 3)


# --- Invariants ------------------------------------------------------------------------------


def random_world(seed: int) -> tuple[list[PendingJob], list[WorkerState], FairShareState]:
    rng = random.Random(seed)
    models = [f"m{index}" for index in range(6)]
    pending = [
        job(
            job_id,
            owner=(owner := rng.randrange(20)),
            tenant=owner % 4,
            model=(model := rng.choice(models)),
            key=f"{model}|{rng.randrange(3)}",
            images=rng.choice((1, 1, 1, 2, 4, 10)),
            waited=rng.uniform(0.0, 120.0),
            priority=rng.randrange(3),
            weight=1.0 + owner % 4,
        )
        for job_id in range(1, 301)
    ]
    workers = [
        worker(
            worker_id,
            *rng.sample(models, rng.randrange(2)),
            free=(free := rng.random() < 0.7),
            cached=tuple(rng.sample(models, 3)),
            busy_until=None if free else NOW + rng.uniform(0.0, 20.0),
        )
        for worker_id in range(1, 17)
    ]
    fair = FairShareState(
        user_service={owner: rng.uniform(0, 100) for owner in range(20)},
        tenant_service={tenant: rng.uniform(0, 300) for tenant in range(4)},
        running_per_user={owner: rng.randrange(3) for owner in range(20)},
        running_per_tenant={tenant: rng.randrange(8) for tenant in range(4)},
    )
    return pending, workers, fair


def test_plans_respect_every_rule_on_random_worlds() -> None:
    config = PolicyConfig()
    for seed in range(30):
        pending, workers, fair = random_world(seed)
        by_id = {candidate.job_id: candidate for candidate in pending}
        free = {candidate.worker_id: candidate for candidate in workers if candidate.free}
        assignments = plan(pending, workers, fair, config)
        assert assignments, seed
        handed_out = [job_id for assignment in assignments for job_id in assignment.job_ids]
        assert len(handed_out) == len(set(handed_out)), "a job handed out twice"
        assert len({assignment.worker_id for assignment in assignments}) == len(assignments)
        per_user: dict[int, int] = dict(fair.running_per_user)
        per_tenant: dict[int, int] = dict(fair.running_per_tenant)
        for assignment in assignments:
            target = free[assignment.worker_id]
            jobs = [by_id[job_id] for job_id in assignment.job_ids]
            assert len({candidate.batch_key for candidate in jobs}) == 1
            assert len(jobs) == 1 or sum(candidate.images for candidate in jobs) <= target.max_batch
            assert assignment.load_model == (jobs[0].model_key not in target.resident_models)
            for candidate in jobs:
                per_user[candidate.owner_id] = per_user.get(candidate.owner_id, 0) + 1
                per_tenant[candidate.tenant_id] = per_tenant.get(candidate.tenant_id, 0) + 1
                assert per_user[candidate.owner_id] <= config.max_running_per_user
                assert per_tenant[candidate.tenant_id] <= config.max_running_per_tenant


def test_the_same_world_in_any_order_gives_the_same_plan() -> None:
    for seed in range(10):
        pending, workers, fair = random_world(seed)
        expected = plan(pending, workers, fair)
        rng = random.Random(seed)
        shuffled_pending, shuffled_workers = pending[:], workers[:]
        rng.shuffle(shuffled_pending)
        rng.shuffle(shuffled_workers)
        assert plan(shuffled_pending, shuffled_workers, fair) == expected
        assert plan(pending, workers, fair) == expected


def test_a_job_listed_twice_is_handed_out_once() -> None:
    pending = [job(1, key="k"), job(1, key="k"), job(2, owner=2, key="k")]
    assignments = plan(pending, [worker(1, "m1"), worker(2, "m1")])
    assert sorted(job_id for assignment in assignments for job_id in assignment.job_ids) == [1, 2]


def test_nothing_to_do() -> None:
    assert plan([], [worker(1, "m1")]) == []
    assert plan([job(1)], []) == []
    assert plan([job(1)], [worker(1, "m1", free=False, busy_until=NOW + 100.0)]) == []


# --- The simulator ---------------------------------------------------------------------------


def test_the_simulator_runs_and_ends_with_one_json_line() -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "scheduler_sim.py"
    spec = importlib.util.spec_from_file_location("scheduler_sim", path)
    assert spec is not None and spec.loader is not None
    simulator = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("scheduler_sim", simulator)  # its dataclasses look their module up
    spec.loader.exec_module(simulator)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        simulator.main(["--minutes", "3", "--workers", "2", "--users", "12", "--tenants", "3", "--heavy-users", "1"])
    summary = json.loads(output.getvalue().strip().splitlines()[-1])
    assert set(summary) == {"fifo", "affinity", "atelier"}
    for figures in summary.values():
        assert set(figures) >= {
            "images_per_s",
            "p50_wait_light_s",
            "p95_wait_light_s",
            "p95_wait_heavy_s",
            "jain",
            "model_loads",
            "busy",
        }
        assert figures["images_per_s"] > 0


# --- Jobs that need no model (extras) ----------------------------------------------------------


def test_a_job_that_needs_no_model_runs_at_once_on_the_least_wanted_worker() -> None:
    # a cold model's job waits behind warm work; a model-less one is warm everywhere
    pending = [job(1, owner=1, model="cold", waited=10.0), job(2, owner=2, model="", waited=1.0)]
    warm_work = job(3, owner=3, model="m1", waited=0.5)
    assignments = plan([*pending, warm_work], [worker(1, "m1"), worker(2, "m2")])
    by_job = {a.job_ids[0]: a for a in assignments}
    assert by_job[2] == Assignment(worker_id=2, job_ids=(2,), load_model=False)  # m2: nobody wants it
    assert by_job[3].worker_id == 1  # m1's worker is kept for m1's job
    assert 1 not in by_job  # the cold model still waits for a free worker


def test_a_lone_worker_takes_a_model_less_job_first_in_fair_share_order() -> None:
    pending = [job(1, owner=1, model="", waited=1.0), job(2, owner=2, model="m1", waited=0.5)]
    assert plan(pending, [worker(1, "m1")]) == [Assignment(worker_id=1, job_ids=(1,), load_model=False)]
