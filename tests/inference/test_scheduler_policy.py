"""The placement policy is pure: plain data in, assignments out."""

from inference.scheduler import PendingJob, WorkerSlot, plan_assignments


def job(job_id: int, at: float, checkpoint: str = "a") -> PendingJob:
    return PendingJob(job_id=job_id, owner_id=1, tenant_id=1, checkpoint=checkpoint, submitted_at=at)


def test_oldest_first_and_never_more_than_free_slots() -> None:
    pending = [job(3, 3.0), job(1, 1.0), job(2, 2.0)]
    plan = plan_assignments(pending, [WorkerSlot(10, 1), WorkerSlot(11, 1)])
    assert [a.job_id for a in plan] == [1, 2]
    assert sorted(a.worker_id for a in plan) == [10, 11]


def test_a_worker_holding_the_checkpoint_is_preferred() -> None:
    plan = plan_assignments([job(1, 1.0, "b")], [WorkerSlot(10, 1, frozenset({"a"})), WorkerSlot(11, 1, frozenset({"b"}))])
    assert plan[0].worker_id == 11


def test_no_free_worker_no_assignment() -> None:
    assert plan_assignments([job(1, 1.0)], [WorkerSlot(10, 0)]) == []
    assert plan_assignments([job(1, 1.0)], []) == []
