"""A1111 sampler and schedule-type names, resolved onto diffusers schedulers (pure).

`resolve_sampler("DPM++ 2M Karras", None)` → sampler "DPM++ 2M", schedule "Karras",
`DPMSolverMultistepScheduler(use_karras_sigmas=True, …)`. Names and aliases match
case-insensitively; a legacy "<sampler> <schedule>" name is split as A1111 1.9+ does.
The mapping follows ../shared/reference/a1111.md §7.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SamplerError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...]
    scheduler_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "automatic"  # what "Automatic" means for this sampler


@dataclass(frozen=True)
class Schedule:
    name: str
    label: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplerChoice:
    name: str
    schedule_label: str  # "Automatic" when the sampler's own default applies
    effective_schedule_label: str  # what the infotext's "Schedule type" shows
    scheduler_class: str
    scheduler_kwargs: dict[str, Any]


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, "karras"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSinglestepScheduler", {}, "karras"),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, "exponential"),
    Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"}, "exponential"),
    Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 3}, "exponential"),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler"),
    Sampler("Euler", ("k_euler",), "EulerDiscreteScheduler"),
    Sampler("LMS", ("k_lms",), "LMSDiscreteScheduler"),
    Sampler("Heun", ("k_heun",), "HeunDiscreteScheduler"),
    Sampler("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", {}, "karras"),
    Sampler("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", {}, "karras"),
    Sampler("DDIM", ("ddim",), "DDIMScheduler"),
    Sampler("PLMS", ("plms",), "PNDMScheduler", {"skip_prk_steps": True}),
    Sampler("UniPC", ("unipc",), "UniPCMultistepScheduler"),
    Sampler("LCM", ("k_lcm",), "LCMScheduler"),
)

# The samplers that add noise of their own at each step (A1111's `uses_ensd`): only their images
# depend on eta_noise_seed_delta, and only their infotext names it ("ENSD").
ENSD_SAMPLERS = frozenset({"Euler a", "DPM2 a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"})

SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic"),
    Schedule("uniform", "Uniform"),
    Schedule("karras", "Karras", {"use_karras_sigmas": True}),
    Schedule("exponential", "Exponential", {"timestep_spacing": "linspace", "use_exponential_sigmas": True}),
    Schedule("sgm_uniform", "SGM Uniform", {"timestep_spacing": "trailing"}),
    Schedule("simple", "Simple", {"timestep_spacing": "trailing"}),
    Schedule("beta", "Beta", {"timestep_spacing": "linspace", "use_beta_sigmas": True}),
    Schedule("normal", "Normal"),
    Schedule("ddim", "DDIM"),
)

# Schedulers that accept the sigma-schedule keyword arguments above.
_SIGMA_SCHEDULERS = {
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler",
    "HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
    "LMSDiscreteScheduler", "UniPCMultistepScheduler",
}


def _find_sampler(name: str) -> Sampler | None:
    wanted = name.strip().lower()
    for sampler in SAMPLERS:
        if wanted == sampler.name.lower() or wanted in sampler.aliases:
            return sampler
    return None


def _find_schedule(name: str) -> Schedule | None:
    wanted = name.strip().lower()
    for schedule in SCHEDULES:
        if wanted in (schedule.name, schedule.label.lower()) or (wanted == "sgmuniform" and schedule.name == "sgm_uniform"):
            return schedule
    return None


def resolve_sampler(sampler_name: str | None, scheduler: str | None = None) -> SamplerChoice:
    name = (sampler_name or "Euler").strip()
    schedule = _find_schedule(scheduler or "automatic")
    if schedule is None:
        labels = ", ".join(s.label for s in SCHEDULES)
        raise SamplerError("scheduler", f"unknown scheduler {scheduler!r}; use one of: {labels}")

    sampler = _find_sampler(name)
    if sampler is None:  # legacy "DPM++ 2M Karras": strip a trailing schedule name
        for candidate in SCHEDULES[1:]:
            suffix = " " + candidate.label.lower()
            if name.lower().endswith(suffix):
                sampler = _find_sampler(name[: -len(suffix)])
                if sampler is not None:
                    schedule = candidate
                    break
    if sampler is None:
        names = ", ".join(s.name for s in SAMPLERS)
        raise SamplerError("sampler_name", f"unknown sampler {sampler_name!r}; use one of: {names}")

    if schedule.name == sampler.default_schedule:
        schedule = SCHEDULES[0]  # A1111 records the sampler's own default as "Automatic"
    effective = schedule if schedule.name != "automatic" else _find_schedule(sampler.default_schedule)
    assert effective is not None
    kwargs = dict(sampler.kwargs)
    if sampler.scheduler_class in _SIGMA_SCHEDULERS:
        kwargs.update(effective.kwargs)
    return SamplerChoice(
        name=sampler.name,
        schedule_label=schedule.label,
        effective_schedule_label=effective.label,
        scheduler_class=sampler.scheduler_class,
        scheduler_kwargs=kwargs,
    )


# ---------------------------------------------------------------------------------------------
# A1111's sampler parameters: eta, sigma churn, sigma noise and the negative-guidance minimum sigma
# ---------------------------------------------------------------------------------------------

# The samplers that take eta, and A1111's default for each (DDIM's is `eta_ddim`'s 0; the
# k-diffusion ones' `eta_ancestral`'s 1). Which option a request without `eta` reads follows.
ETA_DEFAULTS: dict[str, float] = {
    "DDIM": 0.0, "Euler a": 1.0, "DPM2 a": 1.0, "DPM++ 2M SDE": 1.0, "DPM++ 2M SDE Heun": 1.0,
}
# The samplers with A1111's sigma churn (k-diffusion's `s_churn`, `s_tmin`, `s_tmax`): Euler's
# diffusers scheduler has it; Heun's and DPM2's have no churn (their second-order step would
# need the model re-run at the churned sigma), so those keep the ODE path, as at churn 0.
CHURN_SAMPLERS = frozenset({"Euler"})
# The samplers whose added noise `s_noise` scales (Euler's only when it churns).
S_NOISE_SAMPLERS = frozenset({"Euler", "Euler a", "DPM2 a", "DPM++ 2M SDE", "DPM++ 2M SDE Heun"})


@dataclass(frozen=True)
class SamplerParameters:
    """A job's sampler parameters, resolved (`sampler_parameters`) and kept only where its sampler
    uses them: every other field holds A1111's default, so jobs that differ only in parameters
    their sampler ignores still share a batch and a default job runs exactly as diffusers does."""

    eta: float | None = None  # None: the sampler's own default (`ETA_DEFAULTS`), or it takes no eta
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0  # 0: no upper bound (A1111: infinity)
    s_noise: float = 1.0
    s_min_uncond: float = 0.0  # NGMS: below this sigma the negative prompt is skipped (every other step)
    s_min_uncond_all: bool = False  # NGMS on every step, not every other

    def infotext(self, sampler_name: str) -> dict[str, Any]:
        """A1111's infotext entries for the parameters that differ from the sampler's defaults."""
        entries: dict[str, Any] = {}
        if self.eta is not None:
            entries["Eta DDIM" if sampler_name == "DDIM" else "Eta"] = self.eta
        entries["Sigma churn"] = self.s_churn or None
        entries["Sigma tmin"] = self.s_tmin or None
        entries["Sigma tmax"] = self.s_tmax or None
        entries["Sigma noise"] = self.s_noise if self.s_noise != 1.0 else None
        entries["NGMS"] = self.s_min_uncond or None
        entries["NGMS all steps"] = True if self.s_min_uncond and self.s_min_uncond_all else None
        return {key: value for key, value in entries.items() if value is not None}

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sampler_parameters(
    sampler_name: str, *, eta: float, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
    s_min_uncond: float, s_min_uncond_all: bool,
) -> SamplerParameters:
    """The parameters `sampler_name` uses (A1111's name, resolved), the others at their defaults
    (`eta` None: the sampler's default)."""
    churns = sampler_name in CHURN_SAMPLERS
    default_eta = ETA_DEFAULTS.get(sampler_name)
    return SamplerParameters(
        eta=eta if default_eta is not None and eta is not None and eta != default_eta else None,
        s_churn=s_churn if churns else 0.0,
        s_tmin=s_tmin if churns and s_churn else 0.0,
        s_tmax=s_tmax if churns and s_churn else 0.0,
        s_noise=s_noise if sampler_name in S_NOISE_SAMPLERS and (not churns or s_churn) else 1.0,
        s_min_uncond=s_min_uncond,
        s_min_uncond_all=s_min_uncond_all and s_min_uncond > 0,
    )
