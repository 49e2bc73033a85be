"""A1111's sampler parameters on diffusers' schedulers: eta, sigma churn, sigma noise and NGMS (no Django).

A1111 hands its k-diffusion samplers `eta` (ancestral and SDE samplers: how much of each step's
noise is fresh), `s_churn`/`s_tmin`/`s_tmax` (Euler: noise added back before a step, within a
sigma range) and `s_noise` (the added noise's scale), DDIM its own eta, and its CFG denoiser the
"negative guidance minimum sigma" (NGMS, `s_min_uncond`: below that sigma the negative prompt's
UNet pass is skipped, every other step). diffusers' schedulers take some of these and not others:

* DDIM: `eta` is a keyword of `DDIMScheduler.step`, which the pipeline fills with its own
  default (0); the step is wrapped to use the job's.
* Euler: `EulerDiscreteScheduler.step` has k-diffusion's churn (`s_churn`, `s_tmin`, `s_tmax`,
  `s_noise`); the step is wrapped to pass them (A1111's `s_tmax` 0 is infinity).
* Euler a: diffusers' step is k-diffusion's `sample_euler_ancestral` at eta 1 and s_noise 1; other
  values run `_euler_ancestral_step`, the same arithmetic with k-diffusion's `get_ancestral_step`.
* DPM2 a: the noise sigmas are fixed when the timesteps are set; they are recomputed with eta,
  and s_noise folded into the noise's sigma.
* DPM++ 2M SDE (midpoint or Heun): its first- and second-order updates at eta 1 are diffusers';
  other values run k-diffusion's `sample_dpmpp_2m_sde` arithmetic (`_SdeUpdates`).

Everything is set on the scheduler object the engine builds for one batch
(`WorkerRuntime._pipeline_for`), never on a cached one, and at A1111's defaults nothing is
touched, so a default job is exactly diffusers' computation. NGMS is a UNet hook for the length of
one pipeline call (`negative_guidance_minimum_sigma`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from a1111.samplers import SamplerParameters
from runtime.module_hooks import around_calls


def configure_scheduler(scheduler: Any, params: SamplerParameters) -> None:
    """Make this batch's own `scheduler` run with `params` (see the module docstring)."""
    name = type(scheduler).__name__
    eta = params.eta
    if name == "DDIMScheduler" and eta is not None:
        _fix_step_keywords(scheduler, eta=eta)
    elif name == "EulerDiscreteScheduler" and params.s_churn:
        _fix_step_keywords(
            scheduler, s_churn=params.s_churn, s_tmin=params.s_tmin, s_tmax=params.s_tmax or math.inf,
            s_noise=params.s_noise,
        )
    elif name == "EulerAncestralDiscreteScheduler" and (eta is not None or params.s_noise != 1.0):
        scheduler.step = functools.partial(
            _euler_ancestral_step, scheduler, eta=1.0 if eta is None else eta, s_noise=params.s_noise
        )
    elif name == "KDPM2AncestralDiscreteScheduler" and (eta is not None or params.s_noise != 1.0):
        _ancestral_sigmas_on_set(scheduler, eta=1.0 if eta is None else eta, s_noise=params.s_noise)
    elif (
        name == "DPMSolverMultistepScheduler" and scheduler.config.algorithm_type == "sde-dpmsolver++"
        and (eta is not None or params.s_noise != 1.0)
    ):
        _SdeUpdates(scheduler, eta=1.0 if eta is None else eta, s_noise=params.s_noise).install()


def _fix_step_keywords(scheduler: Any, **fixed: Any) -> None:
    """`scheduler.step` with these keyword arguments whatever the pipeline passes. `functools.wraps`
    keeps the signature the pipeline inspects (it passes `eta` and `generator` only to steps that take them)."""
    original = scheduler.step

    @functools.wraps(original)
    def step(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, **fixed})

    scheduler.step = step


def ancestral_sigmas(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """k-diffusion's `get_ancestral_step`: (sigma_down, sigma_up) of a step from `sigma_from` to
    `sigma_to` with `eta` of the step's noise fresh (0: none, the ODE step)."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def _predicted_original(scheduler: Any, model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    prediction = scheduler.config.prediction_type
    if prediction == "epsilon":
        return sample - sigma * model_output
    if prediction == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
    raise ValueError(f"{type(scheduler).__name__} cannot run eta or s_noise with prediction_type {prediction!r}")


def _euler_ancestral_step(
    scheduler: Any, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any = None,
    return_dict: bool = True, *, eta: float, s_noise: float,
) -> Any:
    """`EulerAncestralDiscreteScheduler.step` with k-diffusion's eta and s_noise: the same
    arithmetic, in the same precision, and the noise drawn from the same generators."""
    if scheduler.step_index is None:
        scheduler._init_step_index(timestep)
    sigma = scheduler.sigmas[scheduler.step_index]
    sigma_to = scheduler.sigmas[scheduler.step_index + 1]
    sample = sample.to(torch.float32)
    denoised = _predicted_original(scheduler, model_output, sample, sigma)
    sigma_down, sigma_up = ancestral_sigmas(sigma, sigma_to, eta)
    prev_sample = sample + (sample - denoised) / sigma * (sigma_down - sigma)
    noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device, generator=generator)
    prev_sample = (prev_sample + noise * sigma_up * s_noise).to(model_output.dtype)
    scheduler._step_index += 1
    if not return_dict:
        return prev_sample, denoised
    return EulerAncestralDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)


def _ancestral_sigmas_on_set(scheduler: Any, *, eta: float, s_noise: float) -> None:
    """DPM2 a: after diffusers sets its timesteps (with sigmas_up/down at eta 1), the same sigmas
    with `eta`; `s_noise` scales sigmas_up, which only ever multiplies the added noise."""
    original = scheduler.set_timesteps

    @functools.wraps(original)
    def set_timesteps(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        # diffusers keeps [s0, s1, s1, …, s(n-1), s(n-1), 0, 0, 0]: every sigma but the first twice
        sigmas = torch.cat([scheduler.sigmas[:1], scheduler.sigmas[1:-1][::2]])
        following = sigmas.roll(-1)
        following[-1] = 0.0
        down, up = ancestral_sigmas(sigmas, following, eta)
        down[-1] = 0.0
        interpolated = sigmas.log().lerp(down.log(), 0.5).exp()
        interpolated[-2:] = 0.0

        def doubled(values: torch.Tensor) -> torch.Tensor:
            return torch.cat([values[:1], values[1:].repeat_interleave(2), values[-1:]])

        scheduler.sigmas_interpol = doubled(interpolated)
        scheduler.sigmas_up = doubled(torch.nan_to_num(up)) * s_noise
        scheduler.sigmas_down = doubled(down)
        return result

    scheduler.set_timesteps = set_timesteps


class _SdeUpdates:
    """DPM++ 2M SDE's updates with k-diffusion's eta and s_noise (`sample_dpmpp_2m_sde`), in
    diffusers' notation: with h the step in log-SNR, diffusers' eta-1 terms exp(-h), 1 - exp(-2h)
    and sqrt(1 - exp(-2h)) become exp(-eta h), 1 - exp(-(1 + eta) h) and sqrt(1 - exp(-2 eta h)),
    the noise scaled by s_noise."""

    def __init__(self, scheduler: Any, *, eta: float, s_noise: float) -> None:
        self.scheduler, self.eta, self.s_noise = scheduler, eta, s_noise

    def install(self) -> None:
        self.scheduler.dpm_solver_first_order_update = self.first_order
        self.scheduler.multistep_dpm_solver_second_order_update = self.second_order

    def _terms(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t, sigma_s, h, eta h) of the step from sigmas[index] to sigmas[index + 1]."""
        scheduler = self.scheduler
        alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[index + 1])
        alpha_s, sigma_s = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[index])
        h = (torch.log(alpha_t) - torch.log(sigma_t)) - (torch.log(alpha_s) - torch.log(sigma_s))
        eta_h = h * self.eta if self.eta else torch.zeros_like(h)  # 0 × ∞ at the last step is not 0
        return alpha_t, sigma_t, sigma_s, h, eta_h

    def _step(self, sample: torch.Tensor, noise: torch.Tensor | None, index: int, d0: torch.Tensor, d1: torch.Tensor | None) -> torch.Tensor:
        alpha_t, sigma_t, sigma_s, h, eta_h = self._terms(index)
        kept = 1.0 - torch.exp(-h - eta_h)
        x_t = (sigma_t / sigma_s * torch.exp(-eta_h)) * sample + (alpha_t * kept) * d0
        if d1 is not None:
            if self.scheduler.config.solver_type == "heun":
                x_t = x_t + (alpha_t * (kept / (-h - eta_h) + 1.0)) * d1
            else:
                x_t = x_t + 0.5 * (alpha_t * kept) * d1
        if noise is not None and self.eta:
            x_t = x_t + sigma_t * torch.sqrt(1.0 - torch.exp(-2.0 * eta_h)) * noise * self.s_noise
        return x_t

    def first_order(self, model_output: torch.Tensor, *args: Any, sample: torch.Tensor, noise: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        return self._step(sample, noise, self.scheduler.step_index, model_output, None)

    def second_order(self, model_output_list: list[torch.Tensor], *args: Any, sample: torch.Tensor, noise: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        scheduler = self.scheduler
        index = scheduler.step_index
        _, sigma_s0 = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[index])
        alpha_s0, _ = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[index])
        alpha_s1, sigma_s1 = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[index - 1])
        _, _, _, h, _ = self._terms(index)
        h_0 = (torch.log(alpha_s0) - torch.log(sigma_s0)) - (torch.log(alpha_s1) - torch.log(sigma_s1))
        m0, m1 = model_output_list[-1], model_output_list[-2]
        return self._step(sample, noise, index, m0, (1.0 / (h_0 / h)) * (m0 - m1))


@contextmanager
def negative_guidance_minimum_sigma(
    unet: torch.nn.Module, scheduler: Any, params: SamplerParameters, *, guided: bool, composed: bool = False
) -> Iterator[None]:
    """A1111's NGMS for one pipeline call: where a step's sigma is below `s_min_uncond` (on every
    other step, or every step with `s_min_uncond_all`), the UNet runs the conditional half of the
    batch only and hands it back for both halves, so classifier-free guidance gives the conditional
    prediction, as A1111's denoiser does when it skips the negative prompt. Off for chunks with
    composable diffusion (AND), whose own hook lays the rows out differently, and without guidance
    (`guided` False: CFG scale 1 or less, or a guidance-distilled UNet), where there is no negative half."""
    if not params.s_min_uncond or composed or not guided:
        yield
        return
    alphas_cumprod = scheduler.alphas_cumprod
    state = {"call": 0, "skipped": False}

    def sigma_of(timestep: Any) -> float:
        t = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        alpha = float(alphas_cumprod[min(max(int(round(t)), 0), len(alphas_cumprod) - 1)])
        return ((1 - alpha) / alpha) ** 0.5

    def half(value: Any, rows: int) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == rows:
            return value[rows // 2:]
        if isinstance(value, (list, tuple)):
            return type(value)(half(item, rows) for item in value)
        if isinstance(value, dict):
            return {key: half(item, rows) for key, item in value.items()}
        return value

    def before(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        rows = sample.shape[0]
        step, state["call"] = state["call"], state["call"] + 1
        state["skipped"] = (
            rows % 2 == 0 and rows > 1 and (params.s_min_uncond_all or step % 2 == 1)
            and sigma_of(timestep) < params.s_min_uncond
        )
        if not state["skipped"]:
            return args, kwargs
        return half(args, rows), half(kwargs, rows)

    def after(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if not state["skipped"]:
            return output
        if isinstance(output, tuple):
            return (torch.cat([output[0], output[0]]), *output[1:])
        output.sample = torch.cat([output.sample, output.sample])
        return output

    with around_calls(unet, before, after):
        yield
