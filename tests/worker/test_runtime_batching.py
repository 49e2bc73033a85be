"""Cross-user batching in the worker runtime: an image depends on its own seed and prompt,
not on who shares its pipeline batch or where it sits in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from a1111.samplers import resolve_sampler
from runtime.engine import SkipChunk, WorkerRuntime
from runtime.specs import GenerationSpec
from runtime.tiny.model import write_tiny_checkpoint


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> tuple[WorkerRuntime, Path]:
    folder = tmp_path_factory.mktemp("batching")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), checkpoint


def spec(checkpoint: Path, prompts: list[str], seeds: list[int], sampler: str = "Euler a", max_batch: int = 8):
    choice = resolve_sampler(sampler)
    return GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=prompts, negative_prompts=[""] * len(prompts),
        seeds=seeds, steps=6, cfg_scale=7.0, width=64, height=64, max_batch=max_batch,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs,
    )


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM"])
def test_an_image_is_the_same_alone_or_batched_with_other_users_jobs(runtime, sampler) -> None:
    rt, checkpoint = runtime
    alone = rt.generate(spec(checkpoint, ["a red bicycle"], [1234], sampler))[0]
    batched = rt.generate(spec(checkpoint, ["a blue car", "a red bicycle", "a green tree"], [7, 1234, 99], sampler))
    assert np.abs(pixels(batched[1]) - pixels(alone)).max() <= 2  # floating-point tolerance only
    assert np.abs(pixels(batched[0]) - pixels(alone)).max() > 10  # a different job really differs


def test_images_over_max_batch_run_in_chunks_with_the_same_results(runtime) -> None:
    rt, checkpoint = runtime
    steps_seen: list[tuple[int, int]] = []
    one_call = rt.generate(spec(checkpoint, ["x"] * 3, [1, 2, 3]))
    chunked = rt.generate(spec(checkpoint, ["x"] * 3, [1, 2, 3], max_batch=2), on_step=lambda c, s: steps_seen.append((c, s)))
    for a, b in zip(one_call, chunked, strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2
    assert steps_seen == [(0, s) for s in range(7)] + [(1, s) for s in range(7)]


def test_a_step_callback_can_skip_a_chunk(runtime) -> None:
    rt, checkpoint = runtime

    def skip_first(chunk: int, step: int) -> None:
        if chunk == 0 and step == 2:
            raise SkipChunk

    images = rt.generate(spec(checkpoint, ["x"] * 3, [1, 2, 3], max_batch=2), on_step=skip_first)
    assert images[0] is None and images[1] is None and images[2] is not None
