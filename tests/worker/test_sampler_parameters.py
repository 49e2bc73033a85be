"""A1111's sampler parameters in the worker runtime (tiny model, 64x64, 4 steps): eta, sigma churn,
s_noise, NGMS and img2img's noise multiplier change the image as they should, and at A1111's
defaults each scheduler computes exactly what diffusers' does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from a1111.samplers import SamplerParameters, resolve_sampler, sampler_parameters
from runtime.engine import WorkerRuntime
from runtime.img2img import InpaintSettings
from runtime.sampler_parameters import configure_scheduler
from runtime.specs import GenerationSpec, Img2ImgInputs
from runtime.tiny.model import write_tiny_checkpoint

STEPS = 4


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> tuple[WorkerRuntime, Path]:
    folder = tmp_path_factory.mktemp("sampler-parameters")
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=folder / "cache"), checkpoint


def params(sampler: str, **values) -> SamplerParameters:
    defaults = {"eta": None, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0, "s_min_uncond": 0.0, "s_min_uncond_all": False}
    return sampler_parameters(sampler, **{**defaults, **values})


def image(runtime, sampler: str, parameters: SamplerParameters | None = None, *, seed: int = 7, cfg_scale: float = 7.0,
          **changes) -> np.ndarray:
    rt, checkpoint = runtime
    choice = resolve_sampler(sampler)
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a red barn"], negative_prompts=["blurry"],
        seeds=[seed], steps=STEPS, cfg_scale=cfg_scale, width=64, height=64, max_batch=8,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs,
        sampler_parameters=parameters or SamplerParameters(),
    )
    return np.asarray(rt.generate(dataclasses.replace(spec, **changes))[0], dtype=np.int16)


def close(a: np.ndarray, b: np.ndarray, tolerance: int = 2) -> bool:
    return int(np.abs(a - b).max()) <= tolerance


def far(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a - b).max()) > 10


def _scheduler(runtime, sampler: str) -> object:
    rt, checkpoint = runtime
    choice = resolve_sampler(sampler)
    config = rt.pipelines.get(str(checkpoint), "tiny").scheduler.config
    return getattr(diffusers, choice.scheduler_class).from_config(config, **choice.scheduler_kwargs)


def test_defaults_touch_no_scheduler_and_a_sampler_keeps_only_its_own_parameters(runtime) -> None:
    image(runtime, "Euler")  # loads the checkpoint
    for sampler in ("Euler", "Euler a", "DDIM", "DPM2 a", "DPM++ 2M SDE", "Heun", "DPM++ 2M"):
        scheduler = _scheduler(runtime, sampler)
        configure_scheduler(scheduler, params(sampler, eta=0.0 if sampler == "DDIM" else 1.0))
        assert not {"step", "set_timesteps", "dpm_solver_first_order_update"} & set(vars(scheduler)), sampler
    # a parameter the sampler does not use is dropped, so such jobs still batch with plain ones
    assert params("Heun", eta=0.3, s_churn=5.0, s_noise=0.9) == SamplerParameters()
    assert params("Euler", s_noise=0.9) == SamplerParameters()  # Euler adds noise only when it churns
    assert params("DDIM", eta=0.0) == SamplerParameters() and params("DDIM", eta=0.4).eta == 0.4
    assert params("Euler a", eta=0.5).infotext("Euler a") == {"Eta": 0.5}
    assert params("DDIM", eta=0.5).infotext("DDIM") == {"Eta DDIM": 0.5}
    assert params("Euler", s_churn=1.0, s_noise=0.9).infotext("Euler") == {"Sigma churn": 1.0, "Sigma noise": 0.9}


def test_the_eta_and_s_noise_steps_at_a1111s_defaults_are_diffusers_own(runtime) -> None:
    """Our Euler a step, DPM2 a sigmas and DPM++ 2M SDE updates, forced on at eta 1 and s_noise 1,
    compute what diffusers computes (they replace it only for other values)."""
    from runtime import sampler_parameters as module

    euler_a, ours = _scheduler(runtime, "Euler a"), _scheduler(runtime, "Euler a")
    ours.step = lambda *a, **k: module._euler_ancestral_step(ours, *a, eta=1.0, s_noise=1.0, **k)
    dpm2, dpm2_ours = _scheduler(runtime, "DPM2 a"), _scheduler(runtime, "DPM2 a")
    module._ancestral_sigmas_on_set(dpm2_ours, eta=1.0, s_noise=1.0)
    sde, sde_ours = _scheduler(runtime, "DPM++ 2M SDE"), _scheduler(runtime, "DPM++ 2M SDE")
    module._SdeUpdates(sde_ours, eta=1.0, s_noise=1.0).install()
    for theirs, mine in ((euler_a, ours), (dpm2, dpm2_ours), (sde, sde_ours)):
        theirs.set_timesteps(STEPS)
        mine.set_timesteps(STEPS)
        sample = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1)) * theirs.init_noise_sigma
        expected, got = sample.clone(), sample.clone()
        for t in theirs.timesteps:
            output = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(int(t)))
            expected = theirs.step(output, t, theirs.scale_model_input(expected, t), generator=torch.Generator().manual_seed(3)).prev_sample
            got = mine.step(output, t, mine.scale_model_input(got, t), generator=torch.Generator().manual_seed(3)).prev_sample
        assert torch.allclose(expected, got, atol=1e-4), type(theirs).__name__


def test_eta_changes_the_ancestral_and_ddim_images(runtime) -> None:
    euler = image(runtime, "Euler")
    # k-diffusion's ancestral step at eta 0 adds no noise: it is Euler's step
    assert close(image(runtime, "Euler a", params("Euler a", eta=0.0)), euler)
    assert far(image(runtime, "Euler a", params("Euler a", eta=0.5)), image(runtime, "Euler a"))
    assert far(image(runtime, "DDIM", params("DDIM", eta=1.0)), image(runtime, "DDIM"))
    assert far(image(runtime, "DPM2 a", params("DPM2 a", eta=0.3)), image(runtime, "DPM2 a"))
    assert far(image(runtime, "DPM++ 2M SDE", params("DPM++ 2M SDE", eta=0.3)), image(runtime, "DPM++ 2M SDE"))
    assert far(image(runtime, "Euler a", params("Euler a", s_noise=0.5)), image(runtime, "Euler a"))


def test_sigma_churn_applies_within_its_sigma_range_only(runtime) -> None:
    euler = image(runtime, "Euler")
    assert far(image(runtime, "Euler", params("Euler", s_churn=2.0)), euler)
    # every sigma of the run is above s_tmax: nothing churns
    assert close(image(runtime, "Euler", params("Euler", s_churn=2.0, s_tmax=0.001)), euler, tolerance=0)


def test_ngms_skips_the_negative_prompt_below_its_sigma(runtime) -> None:
    rt, checkpoint = runtime
    rows: list[int] = []
    # the rows the UNet's first layer sees (the NGMS hook on the UNet itself runs before it)
    handle = rt.pipelines.get(str(checkpoint), "tiny").unet.conv_in.register_forward_pre_hook(
        lambda module, args: rows.append(args[0].shape[0])
    )
    try:
        every_other = image(runtime, "Euler", params("Euler", s_min_uncond=15.0))
    finally:
        handle.remove()
    assert rows == [2, 1, 2, 1]  # A1111 skips on every other step (all sigmas are below 15)
    # on every step: no negative half at all, which is CFG scale 1 (the conditional prediction)
    unguided = image(runtime, "Euler", cfg_scale=1.0)
    assert close(image(runtime, "Euler", params("Euler", s_min_uncond=15.0, s_min_uncond_all=True)), unguided)
    guided = image(runtime, "Euler")
    assert far(guided, unguided)
    # every other step: the late steps' guidance is the conditional prediction only, a small change
    assert not np.array_equal(every_other, guided) and far(every_other, unguided)


def test_img2img_noise_multiplier_scales_the_starting_noise(runtime) -> None:
    init = Image.new("RGB", (64, 64), (200, 40, 40))

    def img2img(multiplier: float) -> np.ndarray:
        inputs = Img2ImgInputs(init_images=[init], masks=[None], denoising_strength=0.75, inpaint=InpaintSettings(),
                               noise_multiplier=multiplier)
        return image(runtime, "Euler", img2img=inputs)

    plain = img2img(1.0)
    assert far(img2img(0.5), plain)
    assert close(img2img(1.0), plain, tolerance=0)


def test_the_hires_pass_and_fixed_img2img_run_all_their_steps_as_a1111(runtime) -> None:
    """A1111 runs all of the hires pass's steps (and img2img's under `img2img_fix_steps`) over a
    schedule stretched by the denoising strength; plain img2img runs steps × strength."""
    from a1111.generation import img2img_steps
    from runtime.specs import HiresSpec

    rt, checkpoint = runtime
    calls: list[int] = []
    handle = rt.pipelines.get(str(checkpoint), "tiny").unet.conv_in.register_forward_pre_hook(lambda module, args: calls.append(1))
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    try:
        image(runtime, "Euler", hires=HiresSpec(width=96, height=96, upscaler="Latent", steps=3, denoising_strength=0.5))
        hires_calls, calls[:] = len(calls), []
        steps, strength = img2img_steps(STEPS, 0.3)
        inputs = Img2ImgInputs(init_images=[init], masks=[None], denoising_strength=strength)
        image(runtime, "Euler", img2img=inputs, steps=steps)
        fixed_calls, calls[:] = len(calls), []
        image(runtime, "Euler", img2img=Img2ImgInputs(init_images=[init], masks=[None], denoising_strength=0.3))
    finally:
        handle.remove()
    assert (hires_calls, fixed_calls, len(calls)) == (STEPS + 3, STEPS, int(STEPS * 0.3))
    assert img2img_steps(4, 1.0) == (4, 1.0) and img2img_steps(20, 0.7) == (28, 20.5 / 28)
