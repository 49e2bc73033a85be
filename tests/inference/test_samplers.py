"""A1111 sampler names onto diffusers schedulers (reference/a1111.md §7)."""

import diffusers
import pytest

from a1111.samplers import SAMPLERS, SamplerError, resolve_sampler


def test_dpmpp_2m_automatic_means_karras() -> None:
    choice = resolve_sampler("DPM++ 2M", "Automatic")
    assert choice.scheduler_class == "DPMSolverMultistepScheduler"
    assert choice.scheduler_kwargs["use_karras_sigmas"] is True
    assert (choice.schedule_label, choice.effective_schedule_label) == ("Automatic", "Karras")


def test_legacy_name_is_split_and_default_schedule_recorded_as_automatic() -> None:
    choice = resolve_sampler("DPM++ 2M Karras", None)
    assert (choice.name, choice.schedule_label) == ("DPM++ 2M", "Automatic")
    choice = resolve_sampler("Euler Karras", None)
    assert (choice.name, choice.schedule_label) == ("Euler", "Karras")
    assert choice.scheduler_kwargs == {"use_karras_sigmas": True}


def test_names_and_aliases_are_case_insensitive() -> None:
    assert resolve_sampler("euler A").name == "Euler a"
    assert resolve_sampler("k_euler_a").name == "Euler a"
    assert resolve_sampler(None).name == "Euler"


def test_unknown_names_raise() -> None:
    with pytest.raises(SamplerError):
        resolve_sampler("Nope")
    with pytest.raises(SamplerError):
        resolve_sampler("Euler", "Nope")


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_every_sampler_builds_a_real_diffusers_scheduler(sampler) -> None:
    choice = resolve_sampler(sampler)
    scheduler_cls = getattr(diffusers, choice.scheduler_class)
    scheduler = scheduler_cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **choice.scheduler_kwargs)
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10
