"""Prompt editing and alternation in the worker runtime (tiny model, 64x64, 4 steps): the text
changes at A1111's steps, each row of a shared batch keeps its own schedule, and a batch without
schedules runs as before."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from a1111.samplers import resolve_sampler
from runtime.conditioning import encode_prompts
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec
from runtime.tiny.model import write_tiny_checkpoint

STEPS = 4


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> tuple[WorkerRuntime, Path]:
    folder = tmp_path_factory.mktemp("schedules")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), checkpoint


def spec(checkpoint: Path, prompts: list[str], seeds: list[int], negatives: list[str] | None = None) -> GenerationSpec:
    euler = resolve_sampler("Euler")
    return GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=prompts,
        negative_prompts=negatives or [""] * len(prompts), seeds=seeds, steps=STEPS, cfg_scale=7.0, width=64,
        height=64, max_batch=8, scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def same(a, b) -> bool:
    return int(np.abs(pixels(a) - pixels(b)).max()) <= 2  # floating-point tolerance of a batch


def differ(a, b) -> bool:
    return int(np.abs(pixels(a) - pixels(b)).max()) > 10


@contextmanager
def unet_texts(rt: WorkerRuntime, checkpoint: Path, texts: dict[str, torch.Tensor]) -> Iterator[list[list[str]]]:
    """For each UNet call while in the block, which of `texts` (name → encoding) each positive row saw."""
    calls: list[list[str]] = []

    def name(row: torch.Tensor) -> str:
        return next((label for label, encoding in texts.items() if torch.allclose(row, encoding, atol=1e-5)), "?")

    def seen(module, args, kwargs) -> None:
        states = kwargs["encoder_hidden_states"]
        calls.append([name(row) for row in states[states.shape[0] // 2 :]])  # cat([negative, positive])

    handle = rt.pipelines.get(str(checkpoint), "tiny").unet.register_forward_pre_hook(seen, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def encodings(rt: WorkerRuntime, checkpoint: Path, **texts: str) -> dict[str, torch.Tensor]:
    pipeline = rt.pipelines.get(str(checkpoint), "tiny")
    encoded = encode_prompts(pipeline.tokenizer, pipeline.text_encoder, list(texts.values()))
    return dict(zip(texts, encoded, strict=True))


def test_the_conditioning_changes_at_a1111s_steps_in_both_passes(runtime) -> None:
    rt, checkpoint = runtime
    rt.generate(spec(checkpoint, ["x"], [1]))  # loads the checkpoint
    texts = encodings(rt, checkpoint, cat="a red cat", dog="a blue dog")
    prompts = ["a [red cat:blue dog:0.25]", "a [red cat|blue dog]", "a [red cat:blue dog:1.5]", "a [red cat:blue dog:6]"]
    hires = HiresSpec(width=96, height=96, upscaler="Latent", steps=STEPS, denoising_strength=1.0)
    with unet_texts(rt, checkpoint, texts) as calls:
        rt.generate(dataclasses.replace(spec(checkpoint, prompts, [5] * 4), hires=hires))
    first, second = calls[:STEPS], calls[STEPS:]
    # 0.25 of 4 steps ends at step 1: A1111 keeps "cat" for steps 0 and 1; alternation's step 1
    # text covers step 0 too; 1.5 and 6 are past the first pass (4 steps)
    assert first == [["cat", "cat", "cat", "cat"], ["cat", "cat", "cat", "cat"], ["dog", "dog", "cat", "cat"], ["dog", "cat", "cat", "cat"]]
    # hires: 0.25 is long over; 1.5 = half of the hires pass, as is step 6 = 4 + 2
    assert second == [["dog", "cat", "cat", "cat"], ["dog", "cat", "cat", "cat"], ["dog", "dog", "cat", "cat"], ["dog", "cat", "dog", "dog"]]


def test_edges_give_the_plain_prompts_bit_for_bit(runtime) -> None:
    rt, checkpoint = runtime

    def image(prompt: str) -> np.ndarray:
        return pixels(rt.generate(spec(checkpoint, [prompt], [5]))[0])

    # A1111: "when" 0 never applies, >= steps always (then no row changes: the unscheduled path)
    assert np.array_equal(image("a [red cat:blue dog:0]"), image("a blue dog"))
    assert np.array_equal(image(f"a [red cat:blue dog:{STEPS}]"), image("a red cat"))
    assert not np.array_equal(image("a [red cat:blue dog:0.5]"), image("a red cat"))


def test_jobs_with_and_without_schedules_share_a_batch_each_as_if_alone(runtime) -> None:
    """Issue 21's "Done when": two members' jobs, one with prompt editing (a scheduled negative prompt
    too), one without, in one pipeline batch; each image equals the same job run alone."""
    rt, checkpoint = runtime
    editing = ("a [red cat:blue dog:0.5] on a sofa", "[blurry|ugly]", 1234)
    plain = ("a green tree", "", 99)
    batched = rt.generate(spec(checkpoint, [editing[0], plain[0]], [editing[2], plain[2]], [editing[1], plain[1]]))
    alone_editing = rt.generate(spec(checkpoint, [editing[0]], [editing[2]], [editing[1]]))[0]
    alone_plain = rt.generate(spec(checkpoint, [plain[0]], [plain[2]], [plain[1]]))[0]
    assert same(batched[0], alone_editing) and same(batched[1], alone_plain)
    assert differ(batched[0], batched[1])


def test_composable_diffusion_adds_each_parts_guidance_by_its_weight(runtime) -> None:
    """A1111's `a AND b :w`: uncond + cfg * sum(w * (part - uncond)), per image of a shared batch."""
    rt, checkpoint = runtime

    def images(prompts: list[str], cfg: float = 7.0, seeds: list[int] | None = None) -> list:
        return rt.generate(dataclasses.replace(spec(checkpoint, prompts, seeds or [5] * len(prompts)), cfg_scale=cfg))

    plain, plain_half_cfg = images(["a red cat"])[0], images(["a red cat"], cfg=3.5)[0]
    weighted, halves, composed, scheduled_part, other = images(
        ["a red cat :2", "a red cat :0.5 AND a red cat:0.5", "a red cat AND a blue dog", "a red cat AND [a blue dog:x:0.5]", "a green tree"],
        cfg=3.5, seeds=[5, 5, 5, 5, 9],
    )
    assert same(weighted, plain)  # weight 2 at cfg 3.5 is cfg 7
    assert same(halves, plain_half_cfg)  # two halves of one prompt are the prompt
    assert differ(composed, plain_half_cfg) and differ(composed, images(["a blue dog"], cfg=3.5)[0])
    assert np.array_equal(pixels(images(["a red cat :1"])[0]), pixels(plain))  # weight 1: the plain path
    # each image of the batch as if alone
    assert same(composed, images(["a red cat AND a blue dog"], cfg=3.5)[0])
    assert same(scheduled_part, images(["a red cat AND [a blue dog:x:0.5]"], cfg=3.5)[0])
    assert same(other, images(["a green tree"], cfg=3.5, seeds=[9])[0])
