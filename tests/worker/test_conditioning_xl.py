"""A1111-style conditioning for SDXL's two text encoders, on the tiny SDXL model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from a1111.samplers import resolve_sampler
from runtime.checkpoints.loading import load_pipeline
from runtime.conditioning import encode_pair_xl, encode_texts_xl
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec
from runtime.tiny.families import write_tiny_sdxl_checkpoint


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xl")
    checkpoint = write_tiny_sdxl_checkpoint(folder / "tiny-xl.safetensors")
    pipeline = load_pipeline(checkpoint, cache_dir=folder / "cache", device="cpu", dtype=torch.float32)
    return folder, checkpoint, pipeline


def ours(pipeline, prompts, negatives):
    return encode_pair_xl(
        [pipeline.tokenizer, pipeline.tokenizer_2], [pipeline.text_encoder, pipeline.text_encoder_2], prompts, negatives
    )


def test_an_unweighted_short_prompt_encodes_exactly_as_diffusers_does(xl) -> None:
    _, _, pipeline = xl
    mine = ours(pipeline, ["a red house by the sea"], ["blurry, dark"])
    theirs = pipeline.encode_prompt(
        "a red house by the sea", negative_prompt="blurry, dark", device="cpu", do_classifier_free_guidance=True
    )
    for got, expected in zip(
        (mine.prompt_embeds, mine.negative_prompt_embeds, mine.pooled_prompt_embeds, mine.negative_pooled_prompt_embeds),
        theirs, strict=True,
    ):
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5)


def test_an_empty_negative_prompt_is_zeros_as_in_a1111_and_diffusers(xl) -> None:
    _, _, pipeline = xl
    mine = ours(pipeline, ["a house"], [""])
    assert not mine.negative_prompt_embeds.any() and not mine.negative_pooled_prompt_embeds.any()
    assert mine.prompt_embeds.any()


def test_weights_break_and_long_prompts_reach_both_encoders(xl) -> None:
    _, _, pipeline = xl
    plain = ours(pipeline, ["a red house"], ["x"]).prompt_embeds
    weighted = ours(pipeline, ["a (red:1.5) house"], ["x"]).prompt_embeds
    width_1 = pipeline.text_encoder.config.hidden_size
    assert not torch.allclose(plain[..., :width_1], weighted[..., :width_1])  # encoder 1's part
    assert not torch.allclose(plain[..., width_1:], weighted[..., width_1:])  # encoder 2's part
    long = ours(pipeline, [", ".join(["a red house"] * 25)], ["x"])  # 99 tokens: two chunks
    assert long.prompt_embeds.shape[1] == 77 * 2 and long.negative_prompt_embeds.shape[1] == 77 * 2
    broken = ours(pipeline, ["a red house BREAK a blue sky"], ["x"])
    assert broken.prompt_embeds.shape[1] == 77 * 2


def test_weights_change_sdxl_images_through_the_runtime(xl) -> None:
    folder, checkpoint, _ = xl
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="xl", prompts=["a red house"], negative_prompts=[""],
        seeds=[3], steps=3, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")
    plain = np.asarray(runtime.generate(spec)[0], dtype=np.float32)
    again = np.asarray(runtime.generate(spec)[0], dtype=np.float32)
    weighted = np.asarray(runtime.generate(dataclasses.replace(spec, prompts=["a (red:1.6) house"]))[0], dtype=np.float32)
    assert np.array_equal(plain, again)
    assert np.abs(weighted - plain).mean() > 0.5


def test_prompt_schedules_and_and_reach_both_encoders_and_the_pooled_embeddings(xl) -> None:
    """SDXL under a prompt schedule: each UNet call sees the scheduled text in the hidden states and
    in the pooled `text_embeds`, per row of a shared batch; each image equals its job run alone.
    Composable diffusion's weights apply through the same tensors."""
    folder, checkpoint, _ = xl
    euler = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="xl", prompts=["a [red cat:blue dog:0.5]", "a red cat"],
        negative_prompts=["", "[x|]"], seeds=[3, 4], steps=4, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache")
    runtime.generate(dataclasses.replace(spec, steps=1))  # loads the checkpoint
    pipeline = runtime.pipelines.get(str(checkpoint), "xl")
    hidden, pooled = encode_texts_xl(
        [pipeline.tokenizer, pipeline.tokenizer_2], [pipeline.text_encoder, pipeline.text_encoder_2],
        ["a red cat", "a blue dog", "x", "", ""], zero=[False, False, False, True, False],
    )
    names = ["cat", "dog", "x", "zeros", "empty"]

    def name(row: torch.Tensor, table: torch.Tensor) -> str:
        return next((n for n, known in zip(names, table, strict=True) if torch.allclose(row, known, atol=1e-5)), "?")

    calls: list[tuple[list[str], list[str]]] = []

    def seen(module, args, kwargs) -> None:
        states, pooled_rows = kwargs["encoder_hidden_states"], kwargs["added_cond_kwargs"]["text_embeds"]
        calls.append(([name(row, hidden) for row in states], [name(row, pooled) for row in pooled_rows]))

    handle = pipeline.unet.register_forward_pre_hook(seen, with_kwargs=True)
    try:
        batched = runtime.generate(spec)
    finally:
        handle.remove()
    # rows: cat([negative 0, negative 1, positive 0, positive 1]); "[x|]" alternates "x" and "" (encoded,
    # not zeroed: A1111 zeroes a negative prompt whose texts are all empty), "[red cat:blue dog:0.5]"
    # switches after step 2
    expected = [
        ["zeros", "x", "cat", "cat"], ["zeros", "x", "cat", "cat"], ["zeros", "empty", "cat", "cat"], ["zeros", "x", "dog", "cat"]
    ]
    assert [states for states, _ in calls] == expected
    assert [pooled_rows for _, pooled_rows in calls] == expected
    for row in range(2):
        alone = runtime.generate(dataclasses.replace(
            spec, prompts=[spec.prompts[row]], negative_prompts=[spec.negative_prompts[row]], seeds=[spec.seeds[row]]
        ))[0]
        assert np.abs(np.asarray(batched[row], dtype=np.int16) - np.asarray(alone, dtype=np.int16)).max() <= 2
    # composable diffusion through both encoders and the pooled embeddings: weight 2 at cfg 3.5 is cfg 7
    weighted = runtime.generate(dataclasses.replace(spec, prompts=["a red cat :2"], negative_prompts=[""], seeds=[3], cfg_scale=3.5))[0]
    plain = runtime.generate(dataclasses.replace(spec, prompts=["a red cat"], negative_prompts=[""], seeds=[3]))[0]
    assert np.abs(np.asarray(weighted, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).max() <= 2
