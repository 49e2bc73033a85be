"""Runs a batch of prompt expansions inside a worker process: claim, expand together, finish each.

The scheduler hands a worker several promptgen jobs on one language model as one batch (their
batch key is the model's: `inference/scheduler/keys.py`), possibly from several members. They run
as ONE sampling loop (`runtime/promptgen.py`): every job contributes `num_results` rows, each
sampled with its own settings and seed. Each job keeps its own progress (one step per new token,
up to its own `max_length`), its own cancel (its rows stop at the next token; the others go on)
and its own outcome. A job finishes in the same transaction that writes its usage record
(`inference/transitions.py`): the batch's time is shared by rows, `texts` counts its prompts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from a1111.promptgen import PromptgenRequest, model_input, result_text
from inference.models import Job
from inference.runner.batch import ProgressReporter
from inference.jobspec import ModelRef
from inference.model_cache import ModelFiles, ModelUnavailable
from inference.storage import UnsafeModelKey
from inference.transitions import job_claim, job_fail, job_mark_cancelled, job_succeed
from runtime.engine import WorkerRuntime
from runtime.promptgen import PromptgenModelError
from runtime.specs import ExpansionRequest, PromptgenSpec

logger = logging.getLogger(__name__)


class PromptgenJobError(ValueError):
    """A stored promptgen job this worker cannot run; the message is for its owner."""


@dataclass(frozen=True)
class ResolvedModel:
    """The language model a job names, as `promptgen_submit` stored it."""

    key: str
    sha256: str
    model_type: str
    pickled: bool

    @classmethod
    def from_params(cls, params: Any) -> ResolvedModel:
        model = params.get("resolved_model") if isinstance(params, dict) else None
        if not isinstance(model, dict) or not isinstance(model.get("key"), str) or not isinstance(model.get("sha256"), str):
            raise PromptgenJobError("the job's stored model reference is malformed: submit it again")
        return cls(
            key=model["key"], sha256=model["sha256"], model_type=str(model.get("model_type", "")),
            pickled=bool(model.get("pickled", False)),
        )


@dataclass
class PromptgenMember:
    job: Job
    attempt: int
    request: PromptgenRequest
    model: ResolvedModel
    reporter: ProgressReporter


def promptgen_execute(
    *, jobs: list[tuple[str, int]], worker_name: str, runtime: WorkerRuntime, model_files: ModelFiles | None = None
) -> None:
    """Run the (public id, attempt) pairs of promptgen jobs this worker was handed; jobs on
    different models (never batched together by the scheduler) run one model after another."""
    model_files = model_files or ModelFiles.from_settings()
    members = _claim(jobs, worker_name)
    by_model: dict[str, list[PromptgenMember]] = {}
    for member in members:
        by_model.setdefault(member.model.sha256, []).append(member)
    for group in by_model.values():
        with model_files.batch():
            _run_group(group, runtime, model_files)


def _claim(jobs: list[tuple[str, int]], worker_name: str) -> list[PromptgenMember]:
    interval = settings.ATELIER_PROGRESS_INTERVAL_SECONDS
    members: list[PromptgenMember] = []
    for public_id, attempt in jobs:
        job = Job.objects.filter(public_id=public_id, kind=Job.Kind.PROMPTGEN).first()
        if job is None:
            continue
        try:
            request = PromptgenRequest.from_dict(job.params)
            model = ResolvedModel.from_params(job.params)
        except (PromptgenJobError, TypeError) as exc:
            claimed = job_claim(public_id=public_id, attempt=attempt, worker_name=worker_name, total_steps=0)
            if claimed is not None:
                job_fail(job=claimed, attempt=attempt, error=str(exc) if isinstance(exc, PromptgenJobError)
                         else "the job's stored request is malformed: submit it again")
            continue
        claimed = job_claim(public_id=public_id, attempt=attempt, worker_name=worker_name, total_steps=request.max_length)
        if claimed is None:  # not ours (any more): a stale or redelivered message
            continue
        members.append(PromptgenMember(claimed, attempt, request, model, ProgressReporter(claimed, attempt, interval)))
    return members


def build_promptgen_spec(members: list[PromptgenMember], *, model_path: str, allow_pickled: bool) -> PromptgenSpec:
    """The runtime's spec for jobs on one model (pure): each job's input formatted for its model family."""
    model = members[0].model
    return PromptgenSpec(
        model_path=model_path,
        model_sha256=model.sha256,
        allow_pickled=allow_pickled,
        requests=tuple(
            ExpansionRequest(
                prompt=model_input(m.request.prompt, m.model.model_type),
                num_results=m.request.num_results,
                max_new_tokens=m.request.max_length,
                temperature=m.request.temperature,
                top_k=m.request.top_k,
                top_p=m.request.top_p,
                repetition_penalty=m.request.repetition_penalty,
                seed=m.request.seed,
            )
            for m in members
        ),
    )


def _run_group(members: list[PromptgenMember], runtime: WorkerRuntime, model_files: ModelFiles) -> None:
    allow_pickled = settings.ATELIER_ALLOW_PICKLED_MODELS
    total_rows = sum(m.request.num_results for m in members)

    def share(member: PromptgenMember, elapsed: float) -> float:
        return elapsed * member.request.num_results / total_rows  # the batch's time, shared by row

    try:
        if members[0].model.pickled and not allow_pickled:
            raise PromptgenModelError(
                "the model holds pickled weights (pytorch_model.bin) and this worker does not allow them "
                "(ATELIER_ALLOW_PICKLED_MODELS): convert them to model.safetensors"
            )
        spec = build_promptgen_spec(members, model_path=model_files.path(ModelRef(members[0].model.key, members[0].model.sha256)), allow_pickled=allow_pickled)
    except (PromptgenModelError, UnsafeModelKey, ModelUnavailable) as exc:
        for member in members:
            job_fail(job=member.job, attempt=member.attempt, error=f"prompt expansion failed: {exc}")
        return

    def on_step(step: int) -> Collection[int]:
        stopped = []
        for index, member in enumerate(members):
            if member.reporter.stopped.is_set():
                stopped.append(index)
            elif step <= member.request.max_length:
                member.reporter.report(step)
        return stopped

    for member in members:
        member.reporter.start()
    started = time.perf_counter()
    error: str | None = None
    texts: list[list[str]] = []
    try:
        texts = runtime.promptgen.expand(spec, on_step=on_step)
    except Exception as exc:  # noqa: BLE001 - a batch's failure must never take the worker down
        logger.exception("promptgen batch of %s failed", [m.job.public_id for m in members])
        error = f"prompt expansion failed: {exc}"
    finally:
        for member in members:
            member.reporter.close()
    elapsed = time.perf_counter() - started
    for index, member in enumerate(members):
        job, attempt = member.job, member.attempt
        if error is not None:
            job_fail(job=job, attempt=attempt, error=error, gpu_seconds=share(member, elapsed))
        elif member.reporter.stopped.is_set() or len(texts[index]) != member.request.num_results:
            job_mark_cancelled(job=job, attempt=attempt, gpu_seconds=share(member, elapsed))
        else:
            results = [result_text(member.request.prompt, text, member.model.model_type) for text in texts[index]]
            if not job_succeed(job=job, attempt=attempt, outputs=[], infotexts=[], texts=results,
                               gpu_seconds=share(member, elapsed)):
                logger.warning("job %s finished here but was no longer ours: result discarded", job.public_id)
