"""A1111's SDXL refiner on the tiny models: sampling switches from the tiny SDXL to a tiny,
refiner-shaped checkpoint (one text encoder, aesthetic-score time ids) at `switch_at` of the steps,
in txt2img, img2img and the hires fix's second pass (or first, as A1111's option says)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from a1111.samplers import resolve_sampler
from runtime.checkpoints.loading import detect_architecture
from runtime.engine import WorkerRuntime
from runtime.specs import GenerationSpec, HiresSpec, Img2ImgInputs, RefinerSpec
from runtime.tiny.families import write_tiny_sdxl_checkpoint, write_tiny_sdxl_refiner_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refiner")
    base = write_tiny_sdxl_checkpoint(folder / "tiny-xl.safetensors")
    refiner = write_tiny_sdxl_refiner_checkpoint(folder / "tiny-xl-refiner.safetensors", seed=1)
    return folder, base, refiner


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def test_the_refiner_takes_over_at_its_switch_point_in_every_pass(models) -> None:
    folder, base, refiner_file = models
    assert detect_architecture(refiner_file).name == "tiny-sdxl-refiner"
    euler = resolve_sampler("Euler", "Automatic")
    spec = GenerationSpec(
        checkpoint_path=str(base), checkpoint_sha256="xl", prompts=["a red house"], negative_prompts=["blurry"],
        seeds=[3], steps=4, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=euler.scheduler_class, scheduler_kwargs=euler.scheduler_kwargs,
    )
    runtime = WorkerRuntime(device="cpu", cache_size=2, config_cache_dir=folder / "cache")

    def refined(at: float, of: GenerationSpec = spec) -> GenerationSpec:
        return dataclasses.replace(of, refiner=RefinerSpec(path=str(refiner_file), sha256="ref", switch_at=at))

    # txt2img: half the steps on each model differs from the base alone and from the refiner alone
    steps: list[int] = []
    alone = pixels(runtime.generate(spec)[0])
    assert runtime.pipelines.loaded_pairs() == []
    half = pixels(runtime.generate(refined(0.5), on_step=lambda chunk, step: steps.append(step))[0])
    only_refiner = pixels(runtime.generate(refined(0.0))[0])
    assert np.abs(half - alone).mean() > 1.0 and np.abs(half - only_refiner).mean() > 1.0
    assert steps == [0, 1, 2, 3, 4]  # the refiner's steps count on from the base's
    assert runtime.pipelines.loaded_pairs() == [("xl", "ref")]  # what the worker reports as the pair's key
    # a switch at 1.0 never reaches the refiner (A1111: no refiner pass): exactly the base's image
    assert np.array_equal(pixels(runtime.generate(refined(1.0))[0]), alone)

    # img2img: the base denoises down to the switch, the refiner from there
    init = Image.fromarray(alone.astype(np.uint8))
    img2img = dataclasses.replace(
        spec, img2img=Img2ImgInputs(init_images=[init], masks=[None], denoising_strength=0.75, resize_mode=0)
    )
    base_only = pixels(runtime.generate(img2img)[0])
    assert np.abs(pixels(runtime.generate(refined(0.5, img2img))[0]) - base_only).mean() > 1.0
    # a switch before the pass's first step (t = 501 at strength 0.75): the refiner runs the whole pass
    assert np.abs(pixels(runtime.generate(refined(0.1, img2img))[0]) - base_only).mean() > 1.0

    # hires fix: the first pass is the base's alone, the refiner takes the second pass over
    hires = dataclasses.replace(
        spec, hires=HiresSpec(width=80, height=80, upscaler="Latent", steps=4, denoising_strength=0.75)
    )
    hires_steps: list[int] = []
    without = pixels(runtime.generate(hires)[0])
    with_refiner = runtime.generate(refined(0.5, hires), on_step=lambda chunk, step: hires_steps.append(step))[0]
    assert with_refiner.size == (80, 80)
    assert np.abs(pixels(with_refiner) - without).mean() > 1.0
    assert hires_steps[-1] == 4 + 4 and hires_steps == sorted(hires_steps)  # all 4 hires steps (a stretched schedule)
    # A1111's hires_fix_refiner_pass "first pass": the refiner refines the first pass (its latents go on)
    first = refined(0.5, hires)
    first = dataclasses.replace(first, refiner=dataclasses.replace(first.refiner, hires_passes="first pass"))
    first_pass = pixels(runtime.generate(first)[0])
    assert np.abs(first_pass - without).mean() > 1.0 and np.abs(first_pass - pixels(with_refiner)).mean() > 1.0
