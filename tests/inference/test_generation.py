"""The one request schema: A1111 names and defaults, and a 400-worthy error naming the field."""

import random

import pytest

from a1111.generation import GenerationRequest, Limits, RequestValidationError, parse_generation_request


def parse(**fields):
    return parse_generation_request(fields, rng=random.Random(0))


def test_a1111_api_defaults() -> None:
    request = parse()
    assert (request.steps, request.cfg_scale, request.width, request.height) == (50, 7.0, 512, 512)
    assert request.sampler_name == "Euler"  # the API's sampler_index default
    assert (request.batch_size, request.n_iter) == (1, 1)
    assert 0 <= request.seed < 4294967294  # -1 is drawn at submit time
    assert request.all_seeds() == [request.seed]


def test_unknown_keys_are_ignored_and_known_ones_kept() -> None:
    request = parse(prompt="cat", steps=20, seed=5, batch_size=2, n_iter=2, not_a_field=1, sampler_name="Euler a")
    assert (request.prompt, request.steps, request.sampler_name) == ("cat", 20, "Euler a")
    assert request.all_seeds() == [5, 6, 7, 8]


def test_sizes_snap_down_to_a_multiple_of_8() -> None:
    request = parse(width=513, height=100)
    assert (request.width, request.height) == (512, 96)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -3}, "steps"),
        ({"steps": 151}, "steps"),
        ({"width": 63}, "width"),
        ({"height": 2049}, "height"),
        ({"width": 50000}, "width"),
        ({"batch_size": 9}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_iter": 1000}, "n_iter"),
        ({"steps": "twenty"}, "steps"),
        ({"steps": 20.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"steps": [20]}, "steps"),
        ({"cfg_scale": "high"}, "cfg_scale"),
        ({"cfg_scale": float("nan")}, "cfg_scale"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "x" * 10_001}, "prompt"),
        ({"seed": "abc"}, "seed"),
        ({"kind": "img2vid"}, "kind"),
        ({"sampler_name": "Warp drive"}, "sampler_name"),
        ({"scheduler": "sideways"}, "scheduler"),
        ({"override_settings": []}, "override_settings"),
        ({"override_settings": {"sd_model_checkpoint": 3}}, "override_settings.sd_model_checkpoint"),
    ],
)
def test_bad_values_name_their_field(fields, field) -> None:
    with pytest.raises(RequestValidationError) as error:
        parse(**fields)
    assert error.value.field == field
    assert field.split(".")[0] in str(error.value)


def test_body_must_be_an_object() -> None:
    with pytest.raises(RequestValidationError) as error:
        parse_generation_request([1, 2])
    assert error.value.field == "body"


def test_limits_are_configurable() -> None:
    with pytest.raises(RequestValidationError):
        parse_generation_request({"batch_size": 3}, limits=Limits(max_batch_size=2))


def test_integral_numbers_in_other_forms_are_accepted() -> None:
    request = parse(steps=20.0, width="256")
    assert (request.steps, request.width) == (20, 256)


def test_json_round_trip() -> None:
    request = parse(prompt="x", override_settings={"sd_model_checkpoint": "tiny"})
    assert GenerationRequest.from_json(request.to_json()) == request
    assert request.checkpoint == "tiny"


def test_hires_fix_fields_and_limits() -> None:
    request = parse(enable_hr=True, width=256, height=128, hr_scale=2, steps=20, hr_second_pass_steps=10)
    assert (request.hr_width, request.hr_height, request.hr_upscaler) == (512, 256, "Latent")
    # A1111 runs all of the second pass's steps (over a schedule stretched by the strength)
    assert request.sampling_steps == 20 + 10 and request.hires
    assert parse(enable_hr=True, steps=20, denoising_strength=0).sampling_steps == 20
    one_side = parse(enable_hr=True, width=256, height=128, hr_resize_x=1024)
    assert (one_side.hr_width, one_side.hr_height) == (1024, 512)
    assert not parse(width=256, hr_scale=2).hires  # enable_hr off: ignored
    with pytest.raises(RequestValidationError, match="hires-fix target 4096x4096 is over"):
        parse(enable_hr=True, width=1024, height=1024, hr_scale=4)
    # Other names are model upscalers, resolved (or refused as not installed) when the job is submitted.
    assert parse(enable_hr=True, width=256, height=256, hr_upscaler="R-ESRGAN 4x+").hr_upscaler == "R-ESRGAN 4x+"


def test_variation_seeds_share_the_seed_and_count_up_subseeds() -> None:
    request = parse(seed=5, subseed=100, subseed_strength=0.4, batch_size=3)
    assert request.all_seeds() == [5, 5, 5] and request.all_subseeds() == [100, 101, 102]
    assert parse(kind="img2img", subseed_strength=0.4).subseed_strength == 0.4  # img2img too (its noise)


def test_controlnet_units_round_trip_and_split_batches() -> None:
    import dataclasses

    from a1111.generation import ControlNetUnitRequest, batch_key

    unit = ControlNetUnitRequest(model="canny", module="canny", weight=0.8, image="users/a/inputs/1.png", model_sha256="f" * 64)
    request = dataclasses.replace(parse_generation_request({"prompt": "x", "seed": 1}), controlnet_units=[unit])
    again = GenerationRequest.from_json(request.to_json())
    assert again == request and isinstance(again.controlnet_units[0], ControlNetUnitRequest)
    assert GenerationRequest.from_json({"prompt": "old job"}).controlnet_units == []  # rows stored before ControlNet

    def key(r: GenerationRequest) -> str:
        return batch_key(r, model_key="m", lora_key="")

    other_image = dataclasses.replace(request, controlnet_units=[dataclasses.replace(unit, image="users/a/inputs/2.png")])
    other_prompt = dataclasses.replace(request, prompt="y", seed=7)
    assert key(request) == key(other_prompt)  # prompts and seeds may differ within a batch
    assert len({key(request), key(other_image), key(dataclasses.replace(request, controlnet_units=[]))}) == 3
