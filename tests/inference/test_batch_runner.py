"""The batch runner (`inference/runner/batch.py`) in-process: real database, real tiny model, real
`WorkerRuntime`, the jobs submitted through `job_submit` and run with `batch_execute` as a
worker process runs them (`tests/security/conftest.py` `run_on_a_worker`).

A runtime subclass only steps in where a test needs to act at a given moment of the run (the
owner presses cancel at the first step; the test reads the rows' previews before the jobs
finish); it never replaces the generation itself.
"""

from __future__ import annotations

import base64
import io
import shutil
import time

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from a1111.generation import GenerationRequest, parse_generation_request
from inference.jobspec import JobSpec
from inference.models import Job
from inference.services import job_cancel, job_skip, job_submit
from runtime.engine import WorkerRuntime
from tests.security.conftest import run_on_a_worker

# the progress reporter threads write through their own connections
pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 3


def _submit(personas, user: str, prompt: str, seed: int, **extra) -> Job:
    body = {"prompt": prompt, "seed": seed, "steps": STEPS, "width": 64, "height": 64, **extra}
    return job_submit(user=personas[user], request=parse_generation_request(body))


def _runtime(cls: type[WorkerRuntime] = WorkerRuntime, **kwargs) -> WorkerRuntime:
    return cls(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR, **kwargs)


def _stored_image(key: str) -> Image.Image:
    return Image.open(settings.DATA_DIR / key).convert("RGB")


def _distance(preview: Image.Image, image: Image.Image) -> float:
    """Mean pixel distance of a (smaller, approximate) live preview to a final image."""
    image = image.convert("RGB").resize(preview.size)
    return float(np.abs(np.asarray(preview, dtype=np.int16) - np.asarray(image, dtype=np.int16)).mean())


def test_two_members_of_one_batch_each_get_their_own_images_and_previews(personas, tiny_checkpoint_path) -> None:
    alices = _submit(personas, "alice", "alice's lighthouse", 111, batch_size=2)
    charlies = _submit(personas, "charlie", "charlie's cat", 222)
    assert alices.batch_key == charlies.batch_key  # one pipeline call for both
    previews: dict[str, str] = {}

    class ReadsThePreviewsBeforeTheJobsFinish(WorkerRuntime):
        def censor(self, images):
            deadline = time.monotonic() + 120  # a bound on waiting for the reporter threads, not a timing
            while time.monotonic() < deadline and len(previews) < 2:
                rows = Job.objects.filter(pk__in=[alices.pk, charlies.pk]).exclude(preview="")
                previews.update(rows.values_list("public_id", "preview"))
                time.sleep(0.02)
            return super().censor(images)

    run_on_a_worker([alices, charlies], name="two", runtime=_runtime(ReadsThePreviewsBeforeTheJobsFinish,
                                                                       preview_every=STEPS))
    assert (alices.status, charlies.status) == ("succeeded", "succeeded"), (alices.error, charlies.error)
    assert len(alices.outputs) == 2 and len(charlies.outputs) == 1
    assert all(key.startswith("users/alice/outputs/") for key in alices.outputs)
    assert charlies.outputs[0].startswith("users/charlie/outputs/")
    assert [seed for seed in alices.seeds] == [111, 112] and charlies.seeds == [222]
    assert all(text.startswith("alice's lighthouse\n") for text in alices.infotexts)
    assert charlies.infotexts[0].startswith("charlie's cat\n") and "Seed: 222" in charlies.infotexts[0]
    assert alices.preview == charlies.preview == ""  # the live preview ends with the job

    # Each job's preview is of its own first image, never of the other member's.
    assert set(previews) == {alices.public_id, charlies.public_id}, "no preview was recorded"
    own = {job.public_id: _stored_image(job.outputs[0]) for job in (alices, charlies)}
    for job, other in ((alices, charlies), (charlies, alices)):
        preview = Image.open(io.BytesIO(base64.b64decode(previews[job.public_id]))).convert("RGB")
        assert _distance(preview, own[job.public_id]) < _distance(preview, own[other.public_id])


def test_a_cancelled_member_is_dropped_while_the_other_succeeds(personas, tiny_checkpoint_path) -> None:
    alices = _submit(personas, "alice", "a lighthouse", 1)
    bobs = _submit(personas, "bob", "a harbour", 2)

    class AliceCancelsAtTheFirstStep(WorkerRuntime):
        def generate(self, spec, on_step=None, on_preview=None):
            def step(chunk: int, done: int) -> None:
                if done == 1:
                    job_cancel(job=Job.objects.get(pk=alices.pk))  # the owner presses interrupt
                if on_step is not None:
                    on_step(chunk, done)

            return super().generate(spec, on_step=step, on_preview=on_preview)

    run_on_a_worker([alices, bobs], name="cancel", runtime=_runtime(AliceCancelsAtTheFirstStep))
    assert (alices.status, alices.outputs) == ("cancelled", [])
    assert not list((settings.DATA_DIR / "users" / "alice" / "outputs").rglob(f"{alices.public_id}-*.png"))
    assert bobs.status == "succeeded" and len(bobs.outputs) == 1 and (settings.DATA_DIR / bobs.outputs[0]).is_file()


def test_a_failing_generation_fails_every_member_with_a_message_without_server_paths(personas, tiny_checkpoint_path) -> None:
    doomed = tiny_checkpoint_path.parent / "doomed.safetensors"
    shutil.copyfile(tiny_checkpoint_path, doomed)
    try:
        jobs = [
            _submit(personas, user, "a boat", seed, override_settings={"sd_model_checkpoint": "doomed"})
            for user, seed in (("alice", 5), ("charlie", 6))
        ]
    finally:
        doomed.unlink()  # gone before the worker loads it: the runtime's own error names its path
    run_on_a_worker(jobs, name="fail", runtime=_runtime())
    for job in jobs:
        assert job.status == "failed" and job.outputs == []
        assert job.error.startswith("generation failed") and "doomed.safetensors" in job.error
        assert str(settings.DATA_DIR) not in job.error and "public/models" not in job.error


def test_a_job_in_an_unknown_spec_version_fails_with_a_message_and_the_batch_goes_on(personas, tiny_checkpoint_path) -> None:
    newer = _submit(personas, "alice", "a lighthouse", 1)
    Job.objects.filter(pk=newer.pk).update(params={**newer.params, "version": 99})
    other = _submit(personas, "bob", "a harbour", 2)
    run_on_a_worker([newer, other], name="version", runtime=_runtime())
    assert newer.status == "failed" and newer.outputs == []
    assert "job spec version 99" in newer.error and "submit it again" in newer.error
    assert other.status == "succeeded" and len(other.outputs) == 1


def test_a_job_queued_in_the_old_format_still_runs(personas, tiny_checkpoint_path) -> None:
    """Version 0: the request as a plain dict, the checkpoint by absolute path in its column."""
    job = _submit(personas, "alice", "a lighthouse", 3)
    legacy = GenerationRequest.from_json(job.params).to_json()
    assert "version" not in legacy and "models" not in legacy
    Job.objects.filter(pk=job.pk).update(params=legacy, checkpoint_path=str(tiny_checkpoint_path.resolve()))
    run_on_a_worker([job], name="legacy", runtime=_runtime())
    assert job.status == "succeeded" and len(job.outputs) == 1, job.error


def test_the_stored_spec_names_models_by_storage_key(personas, tiny_checkpoint_path) -> None:
    job = _submit(personas, "alice", "a lighthouse", 3)
    spec = JobSpec.from_json(job.params)
    assert spec.version == 1 and spec.checkpoint.key == f"public/models/Stable-diffusion/{tiny_checkpoint_path.name}"
    assert job.checkpoint_path == spec.checkpoint.key  # the column holds the key too, not this machine's path
    assert str(settings.DATA_DIR) not in str(job.params)


def _skipping_at(job: Job, at_chunk: int) -> type[WorkerRuntime]:
    """A runtime whose step callback has `job`'s owner press Skip at the first step of chunk
    `at_chunk`, then re-reports that step (as a held job does) until the skip is taken."""

    class OwnerSkips(WorkerRuntime):
        def generate(self, spec, on_step=None, on_preview=None):
            def step(chunk: int, done: int) -> None:
                if chunk == at_chunk and done == 1:
                    job_skip(job=Job.objects.get(pk=job.pk))  # the owner presses Skip
                    deadline = time.monotonic() + 120  # a bound on waiting for the reporter thread, not a timing
                    # Taken, the skip moves the job's bar to its next chunk (`job` starts the batch).
                    while time.monotonic() < deadline and not Job.objects.filter(
                        pk=job.pk, step__gte=STEPS * (chunk + 1)
                    ).exists():
                        on_step(chunk, done)  # raises SkipChunk once every job of the chunk dropped it
                        time.sleep(0.02)
                on_step(chunk, done)

            return super().generate(spec, on_step=step, on_preview=on_preview)

    return OwnerSkips


def test_a_skip_drops_the_current_iteration_and_the_job_keeps_the_rest(personas, tiny_checkpoint_path) -> None:
    """A1111's Skip: a job with a batch count of 2 runs each iteration in a pipeline call of its
    own; skipped during the first, it succeeds with the second's image (and seed) only."""
    alices = _submit(personas, "alice", "a lighthouse", 40, n_iter=2)
    run_on_a_worker([alices], name="skip", runtime=_runtime(_skipping_at(alices, 0)))
    assert alices.status == "succeeded", alices.error
    assert len(alices.outputs) == 1 and alices.seeds == [41]
    assert "Seed: 41" in alices.infotexts[0] and alices.outputs[0].endswith(f"{alices.public_id}-0.png")


def test_a_skip_in_a_shared_chunk_drops_only_the_skipping_job_s_images(personas, tiny_checkpoint_path) -> None:
    alices = _submit(personas, "alice", "a lighthouse", 10, n_iter=3)
    bobs = _submit(personas, "bob", "a harbour", 20)
    assert alices.batch_key == bobs.batch_key
    # chunks: alice's 1st iteration, her 2nd, then her 3rd with bob's image in one call
    run_on_a_worker([alices, bobs], name="skip-shared", runtime=_runtime(_skipping_at(alices, 2)))
    assert alices.status == "succeeded" and alices.seeds == [10, 11] and len(alices.outputs) == 2, alices.error
    assert bobs.status == "succeeded" and bobs.seeds == [20] and len(bobs.outputs) == 1
    assert (settings.DATA_DIR / bobs.outputs[0]).is_file()


def test_chunks_cut_each_batch_count_iteration_apart() -> None:
    from inference.runner.chunks import layout_of

    layout = layout_of([(2, 1), (1, 1), (6, 2), (9, 9)], max_batch=8)
    assert layout.chunks() == [range(0, 1), range(1, 5), range(5, 7), range(7, 15), range(15, 18)]
