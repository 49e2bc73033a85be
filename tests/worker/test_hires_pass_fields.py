"""A1111 1.10's hires-fix second-pass fields in the worker runtime (tiny models, 64x64 → 96x96, 4 steps):
the hires pass's own prompts (per row of a shared batch), sampler and checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from a1111.samplers import resolve_sampler
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec, LoraSpec
from runtime.tiny.lora import write_tiny_lora
from runtime.tiny.model import write_tiny_checkpoint
from tests.worker.test_prompt_schedules import differ, pixels, same

STEPS = 4


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> tuple[WorkerRuntime, Path, Path]:
    folder = tmp_path_factory.mktemp("hires-fields")
    first = write_tiny_checkpoint(folder / "tiny.safetensors")
    other = write_tiny_checkpoint(folder / "tiny-other.safetensors", seed=7)
    return WorkerRuntime(device="cpu", cache_size=2, config_cache_dir=folder / "cache"), first, other


def spec(checkpoint: Path, texts: list[str], seeds: list[int], **hires: object) -> GenerationSpec:
    euler = resolve_sampler("Euler")
    return GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=texts, negative_prompts=[""] * len(texts),
        seeds=seeds, steps=STEPS, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
        hires=HiresSpec(width=96, height=96, upscaler="Latent", steps=STEPS, denoising_strength=0.75, **hires),
    )


def test_the_hires_pass_uses_the_hires_prompt(runtime) -> None:
    """hr_prompt "a blue dog" after "a red cat" is exactly A1111's `[a red cat:a blue dog:4]` over 4 first-pass
    steps: the first pass keeps the prompt, the hires pass (its steps counted after them) the new text."""
    rt, checkpoint, _ = runtime
    plain = rt.generate(spec(checkpoint, ["a red cat"], [3]))[0]
    hires_prompt = rt.generate(spec(checkpoint, ["a red cat"], [3], prompts=["a blue dog"]))[0]
    edited = rt.generate(spec(checkpoint, [f"[a red cat:a blue dog:{STEPS}]"], [3]))[0]
    assert differ(hires_prompt, plain)
    assert np.array_equal(pixels(hires_prompt), pixels(edited))
    negative = rt.generate(spec(checkpoint, ["a red cat"], [3], negative_prompts=["a blue dog in the snow"]))[0]
    assert not np.array_equal(pixels(negative), pixels(plain))


def test_rows_with_different_hires_prompts_share_a_batch_each_as_if_alone(runtime) -> None:
    """Two jobs in one pipeline batch, one with its own hires prompt (scheduled, too), one with the first
    pass's: each image equals its job run alone."""
    rt, checkpoint, _ = runtime
    rows = [("a red cat", "a [blue dog|green tree]", 11), ("a house", "a house", 12)]
    batched = rt.generate(spec(checkpoint, [r[0] for r in rows], [r[2] for r in rows], prompts=[r[1] for r in rows]))
    alone = rt.generate(spec(checkpoint, [rows[0][0]], [rows[0][2]], prompts=[rows[0][1]]))[0]
    plain = rt.generate(spec(checkpoint, [rows[1][0]], [rows[1][2]]))[0]
    assert same(batched[0], alone) and same(batched[1], plain)


def test_the_hires_sampler_changes_only_the_second_pass(runtime) -> None:
    rt, checkpoint, _ = runtime
    plain = rt.generate(spec(checkpoint, ["a red cat"], [4]))[0]
    euler = resolve_sampler("Euler")
    as_first = rt.generate(spec(checkpoint, ["a red cat"], [4], scheduler_class=euler.scheduler_class,
                                scheduler_kwargs=euler.scheduler_kwargs))[0]
    dpm = resolve_sampler("DPM++ 2M", "Karras")
    other = rt.generate(spec(checkpoint, ["a red cat"], [4], scheduler_class=dpm.scheduler_class,
                             scheduler_kwargs=dpm.scheduler_kwargs))[0]
    assert np.array_equal(pixels(as_first), pixels(plain))
    assert differ(other, plain)


def test_the_hires_checkpoint_runs_the_second_pass_with_the_batchs_loras(runtime, tmp_path) -> None:
    """The first pass's UNet runs its steps, the hires checkpoint's UNet the hires pass's; the batch's
    LoRA is applied to both, and the worker notes the pair (what it reports for affinity)."""
    rt, checkpoint, other = runtime
    lora = LoraSpec(path=str(write_tiny_lora(tmp_path / "ink.safetensors", seed=3)), sha256="ink")
    job = dataclasses.replace(
        spec(checkpoint, ["a red cat"], [5], checkpoint_path=str(other), checkpoint_sha256="tiny-other"), loras=[lora]
    )
    rt.generate(spec(checkpoint, ["x"], [1]))  # loads the first checkpoint
    calls: dict[str, int] = {"tiny": 0, "tiny-other": 0}
    handles = []
    for sha, path in (("tiny", checkpoint), ("tiny-other", other)):
        unet = rt.pipelines.get(str(path), sha).unet

        def count(module, args, sha=sha) -> None:
            calls[sha] += 1

        handles.append(unet.register_forward_pre_hook(count))
    try:
        switched = rt.generate(job)[0]
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"tiny": STEPS, "tiny-other": STEPS}  # A1111 runs all the hires steps (a stretched schedule)
    assert rt.pipelines.holds_loras("tiny-other", ["ink"]) and rt.pipelines.holds_loras("tiny", ["ink"])
    assert ("tiny", "tiny-other") in rt.pipelines.loaded_pairs()
    unswitched = dataclasses.replace(job, hires=dataclasses.replace(job.hires, checkpoint_path="", checkpoint_sha256=""))
    assert differ(switched, rt.generate(unswitched)[0])
