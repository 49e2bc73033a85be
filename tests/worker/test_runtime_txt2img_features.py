"""txt2img's hires fix and variation seeds in the worker runtime, on the tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from a1111.samplers import resolve_sampler
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec
from runtime.tiny.model import write_tiny_checkpoint


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[WorkerRuntime, GenerationSpec]:
    folder = tmp_path_factory.mktemp("features")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    choice = resolve_sampler("Euler")  # not ancestral: the starting noise is all the seed decides
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a"] * 2, negative_prompts=[""] * 2,
        seeds=[1, 2], subseeds=[10, 11], steps=4, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs,
    )
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), spec


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest-exact)", "Latent (bicubic antialiased)", "Lanczos", "None"])
def test_hires_fix_makes_a_bigger_image_in_a_second_pass(base, upscaler) -> None:
    rt, spec = base
    steps: list[int] = []
    hires = HiresSpec(width=128, height=96, upscaler=upscaler, steps=4, denoising_strength=0.5)
    images = rt.generate(dataclasses.replace(spec, hires=hires), on_step=lambda chunk, step: steps.append(step))
    assert [image.size for image in images] == [(128, 96), (128, 96)]
    assert steps == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # 4 first-pass steps, then all 4 hires steps (A1111 stretches the schedule)
    again = rt.generate(dataclasses.replace(spec, hires=hires))
    assert np.array_equal(px(again[0]), px(images[0]))
    plain_upscale = rt.generate(spec)[0].resize((128, 96))
    assert np.abs(px(images[0]) - px(plain_upscale)).mean() > 1  # the second pass really ran


def test_variation_seeds_move_from_the_seed_towards_the_subseed(base) -> None:
    rt, spec = base
    plain = rt.generate(spec)
    assert np.array_equal(px(rt.generate(dataclasses.replace(spec, subseed_strength=0.0))[0]), px(plain[0]))
    varied = rt.generate(dataclasses.replace(spec, subseed_strength=0.3))
    assert np.abs(px(varied[0]) - px(plain[0])).max() > 10
    assert np.array_equal(px(rt.generate(dataclasses.replace(spec, subseed_strength=0.3))[0]), px(varied[0]))
    # strength 1 is the subseed's own noise: seed 10 with subseed 1 gives seed 1's image
    swapped = rt.generate(dataclasses.replace(spec, seeds=[10, 11], subseeds=[1, 2], subseed_strength=1.0))
    assert np.abs(px(swapped[0]) - px(plain[0])).max() <= 1


def test_prompt_weights_clip_skip_and_embeddings_reach_the_image(base, tmp_path) -> None:
    from runtime.tiny.embedding import write_tiny_embedding

    rt, spec = base
    plain = dataclasses.replace(spec, prompts=["a cat on a mat"] * 2)
    reference = px(rt.generate(plain)[0])
    same_weight = dataclasses.replace(spec, prompts=["a (cat:1.0) on a mat"] * 2)
    assert np.abs(px(rt.generate(same_weight)[0]) - reference).max() <= 1
    weighted = dataclasses.replace(spec, prompts=["a (cat:1.6) on a mat"] * 2)
    assert np.abs(px(rt.generate(weighted)[0]) - reference).max() > 5
    assert np.abs(px(rt.generate(dataclasses.replace(plain, clip_skip=2))[0]) - reference).max() > 5
    embedding = write_tiny_embedding(tmp_path / "felt-style.safetensors", width=32, seed=4)
    named = dataclasses.replace(spec, prompts=["a cat on a mat, felt-style"] * 2)
    without = px(rt.generate(named)[0])  # no embedding given: "felt-style" is plain words
    with_embedding = dataclasses.replace(named, embeddings=[("felt-style", str(embedding), "e1")])
    assert np.abs(px(rt.generate(with_embedding)[0]) - without).max() > 5


def test_eta_noise_seed_delta_reseeds_only_the_samplers_own_noise_per_image(base) -> None:
    rt, spec = base
    ancestral = resolve_sampler("Euler a")
    spec = dataclasses.replace(spec, scheduler_class=ancestral.scheduler_class, scheduler_kwargs=ancestral.scheduler_kwargs)
    plain = rt.generate(spec)
    assert np.array_equal(px(rt.generate(dataclasses.replace(spec, noise_seed_deltas=[0, 0]))[1]), px(plain[1]))
    ensd = rt.generate(dataclasses.replace(spec, noise_seed_deltas=[31337, 0]))  # one job's image of two
    assert np.abs(px(ensd[0]) - px(plain[0])).max() > 2 and np.array_equal(px(ensd[1]), px(plain[1]))
    assert np.array_equal(px(rt.generate(dataclasses.replace(spec, noise_seed_deltas=[31337, 0]))[0]), px(ensd[0]))
    # a sampler that adds no noise of its own draws only the starting noise: the delta changes nothing
    euler = rt.generate(dataclasses.replace(base[1], noise_seed_deltas=[31337, 31337]))
    assert np.array_equal(px(euler[0]), px(rt.generate(base[1])[0]))
    assert np.array_equal(px(rt.generate(spec)[0]), px(plain[0]))  # the cached pipeline is as it was
