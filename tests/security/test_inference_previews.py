"""Issue #13 (HIGH): a live preview shows only its own job's image, even in a shared batch.

Cross-user batching runs alice's and charlie's images in one pipeline call; each job's preview
must be computed from that job's own latent, never from the chunk's first image.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from a1111.samplers import resolve_sampler
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec
from runtime.tiny.model import write_tiny_checkpoint

STEPS = 4


def _spec(checkpoint: Path, prompts: list[str], seeds: list[int], **extra) -> GenerationSpec:
    euler = resolve_sampler("Euler")
    return GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=prompts, negative_prompts=[""] * len(prompts),
        seeds=seeds, steps=STEPS, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs, **extra,
    )


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(_pixels(a) - _pixels(b)).mean())


def _last_preview(runtime: WorkerRuntime, spec: GenerationSpec) -> dict[int, Image.Image]:
    """The last preview handed over for each image position."""
    previews: dict[int, Image.Image] = {}
    runtime.generate(spec, on_preview=lambda chunk, position, image: previews.__setitem__(position, image))
    return previews


def _alone(runtime: WorkerRuntime, spec: GenerationSpec) -> Image.Image:
    """The last preview of a one-image batch (whatever else the callback is told: it is image 0)."""
    previews: list[Image.Image] = []
    runtime.generate(spec, on_preview=lambda *args: previews.append(args[-1]))
    return previews[-1]


def test_each_job_of_a_shared_batch_gets_the_preview_of_its_own_latent(tmp_path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache", preview_every=STEPS)
    alone_a = _alone(runtime, _spec(checkpoint, ["alice's secret"], [111]))
    alone_b = _alone(runtime, _spec(checkpoint, ["charlie's cat"], [222]))
    # one pipeline call: alice's image at position 0, charlie's at position 1
    batched = _last_preview(runtime, _spec(checkpoint, ["alice's secret", "charlie's cat"], [111, 222],
                                           preview_images=(0, 1)))
    assert set(batched) == {0, 1}
    assert _distance(alone_a, alone_b) > 10  # the two images really differ
    assert _distance(batched[1], alone_b) <= 2  # charlie's preview is his own latent…
    assert _distance(batched[1], alone_a) > 10  # …not alice's
    assert _distance(batched[0], alone_a) <= 2


def _decode(preview: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(preview))).convert("RGB")


@pytest.mark.django_db(transaction=True)  # the progress reporter threads write through their own connections
def test_the_preview_stored_for_each_job_of_a_shared_batch_comes_from_its_own_image(personas, tiny_checkpoint_path) -> None:
    from a1111.generation import parse_generation_request
    from inference.models import Job
    from inference.services import job_submit
    from tests.security.conftest import run_on_a_worker

    def submit(user: str, prompt: str, seed: int) -> Job:
        request = parse_generation_request({"prompt": prompt, "seed": seed, "steps": STEPS, "width": 64, "height": 64})
        return job_submit(user=personas[user], request=request)

    alices, charlies = submit("alice", "alice's secret", 111), submit("charlie", "charlie's cat", 222)
    assert alices.batch_key == charlies.batch_key  # the scheduler may put them in one pipeline call
    stored: dict[str, str] = {}

    class SnapshotsPreviews(WorkerRuntime):
        """Reads the previews the jobs' rows hold once the denoising is done, before they finish."""

        def censor(self, images):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                rows = dict(Job.objects.filter(pk__in=[alices.pk, charlies.pk]).values_list("public_id", "preview"))
                if all(rows.values()):
                    stored.update(rows)
                    break
                time.sleep(0.05)
            return super().censor(images)

    runtime = SnapshotsPreviews(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR,
                                preview_every=STEPS)  # one preview per image: the last step's
    run_on_a_worker([alices, charlies], name="preview", runtime=runtime)
    assert set(Job.objects.values_list("status", flat=True)) == {"succeeded"}
    assert set(stored) == {alices.public_id, charlies.public_id}, "no preview was recorded"

    own = {}
    for job, prompt, seed in ((alices, "alice's secret", 111), (charlies, "charlie's cat", 222)):
        spec = _spec(tiny_checkpoint_path, [prompt], [seed])
        own[job.public_id] = _alone(runtime, spec)
    for job, other in ((charlies, alices), (alices, charlies)):
        preview = _decode(stored[job.public_id])
        mine, theirs = _distance(preview, own[job.public_id]), _distance(preview, own[other.public_id])
        assert mine < theirs / 3, (job.owner.username, mine, theirs)
