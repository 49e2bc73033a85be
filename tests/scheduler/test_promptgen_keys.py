"""Prompt expansions in the pure policy: keyed on their language model, batched across members,
placed on the worker that holds the model (`inference/scheduler/keys.py`)."""

from __future__ import annotations

from inference.scheduler import FairShareState, PendingJob, WorkerState, plan_assignments
from inference.scheduler.keys import model_key, promptgen_batch_key, promptgen_model_key

SHA = "ab" * 32


def _expansion(job_id: int, owner_id: int, tenant_id: int) -> PendingJob:
    return PendingJob(
        job_id=job_id, owner_id=owner_id, tenant_id=tenant_id, submitted_at=0.0,
        model_key=promptgen_model_key(SHA), network_key="", batch_key=promptgen_batch_key(SHA),
        images=1, steps=150, pixels=64 * 64,
    )


def test_keys_never_collide_with_a_checkpoints_and_fit_the_batch_key_column() -> None:
    assert promptgen_model_key(SHA) != model_key(SHA)
    assert len(promptgen_batch_key(SHA)) <= 64


def test_several_members_expansions_on_one_model_are_one_batch_on_the_worker_holding_it() -> None:
    pending = [_expansion(1, 10, 1), _expansion(2, 11, 1), _expansion(3, 20, 2)]
    workers = [
        WorkerState(worker_id=1, free=True, max_batch=8, resident_models=(model_key("cd" * 32),)),
        WorkerState(worker_id=2, free=True, max_batch=8, resident_models=(promptgen_model_key(SHA),)),
    ]
    plan = plan_assignments(pending, workers, FairShareState(), now=1.0)
    assert len(plan) == 1
    assert plan[0].worker_id == 2 and sorted(plan[0].job_ids) == [1, 2, 3] and not plan[0].load_model
