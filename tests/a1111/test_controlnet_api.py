"""ControlNet through the APIs: `alwayson_scripts.controlnet.args` on /sdapi/v1/txt2img and
img2img (A1111's units and PAI-EAS's `image_link` form), the native jobs API, the extension's
`/controlnet/model_list` and `/module_list`, per-member model scoping, and the detect maps.

The first half runs Django's full stack on the test database (validation, resolution, storage:
no worker). The second half (`e2e`) generates for real on a running platform with the tiny
model and a tiny random ControlNet, at 64x64 and 2-3 steps.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image, ImageDraw

from inference.jobspec import JobSpec
from inference.models import Job
from runtime.tiny.controlnet import write_tiny_controlnet
from tests.harness import serving_png

PUBLIC_CONTROLNET = "tiny-canny"


def _rectangle_png(size: tuple[int, int] = (64, 64), box: tuple[int, int, int, int] = (16, 20, 47, 43)) -> bytes:
    image = Image.new("RGB", size, "black")
    ImageDraw.Draw(image).rectangle(box, fill="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unit(**overrides) -> dict:
    unit = {
        "enabled": True, "image": _b64(_rectangle_png()), "module": "canny", "model": PUBLIC_CONTROLNET,
        "weight": 1.0, "resize_mode": "Crop and Resize", "processor_res": 64, "threshold_a": 100, "threshold_b": 200,
        "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False,
    }
    return {**unit, **overrides}


def _body(*units: dict, **extra) -> dict:
    return {"prompt": "a red house", "steps": 2, "width": 64, "height": 64, "seed": 3,
            "alwayson_scripts": {"controlnet": {"args": list(units)}}, **extra}


# =============================================================================================
# Django's stack, no worker
# =============================================================================================


@pytest.fixture
def public_controlnet(tiny_checkpoint_path) -> Path:
    path = settings.ATELIER_PUBLIC_MODEL_DIRS["ControlNet"] / f"{PUBLIC_CONTROLNET}.safetensors"
    if not path.exists():
        write_tiny_controlnet(path, seed=0)
    return path


@pytest.fixture
def alices_controlnet(personas, public_controlnet) -> Iterator[Path]:
    path = settings.DATA_DIR / "users" / "alice" / "models" / "ControlNet" / "alice-lines.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tiny_controlnet(path, seed=5)
    yield path
    path.unlink()


@pytest.mark.django_db
def test_model_and_module_lists_are_the_extensions_and_scoped_to_the_member(api, alices_controlnet) -> None:
    alice = api("alice").get("/controlnet/model_list").json()["model_list"]
    charlie = api("charlie").get("/controlnet/model_list").json()["model_list"]
    assert [name.split(" [")[0] for name in alice] == ["alice-lines", PUBLIC_CONTROLNET]
    assert [name.split(" [")[0] for name in charlie] == [PUBLIC_CONTROLNET]
    assert all(len(name.split(" [")[1]) == 9 for name in alice)  # "name [sha256[:8]]", as the extension
    modules = api("bob").get("/controlnet/module_list").json()
    assert {"none", "canny", "scribble", "lineart_standard", "threshold", "blur_gaussian", "tile_resample"} <= set(modules["module_list"])
    assert api("bob").get("/controlnet/version").json()["version"] >= 1
    response = api(None).get("/controlnet/model_list")
    assert response.status_code == 401 and set(response.json()) == {"error", "detail", "body", "errors"}


def _assert_refused(response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.content
    payload = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"}
    for needle in needles:
        assert needle in payload["detail"], payload["detail"]
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("unit", "needles"),
    [
        ({"model": "control_v11p_sd15_nope"}, ["alwayson_scripts.controlnet.args[0].model", "unknown ControlNet model 'control_v11p_sd15_nope'"]),
        ({"weight": 3.5}, ["alwayson_scripts.controlnet.args[0].weight", "between 0 and 2"]),
        ({"module": "sparkles"}, ["args[0].module", "unknown preprocessor 'sparkles'"]),
        ({"module": "openpose_full"}, ["args[0].module", "needs a model that is not installed"]),
        ({"guidance_end": 1.5}, ["args[0].guidance_end"]),
        ({"guidance_start": 0.9, "guidance_end": 0.1}, ["args[0].guidance_start"]),
        ({"image": "not base64!!"}, ["alwayson_scripts.controlnet.args[0].image"]),
        ({"image": _b64(b"GIF89a not really")}, ["alwayson_scripts.controlnet.args[0].image"]),
        ({"image": ""}, ["args[0].image: required"]),
        ({"image": None, "image_link": "http://127.0.0.1/x.png"}, ["args[0].image_link"]),  # SSRF: private address
    ],
)
def test_bad_controlnet_units_are_a_422_naming_the_field(api, public_controlnet, unit, needles) -> None:
    _assert_refused(api("alice").post("/sdapi/v1/txt2img", _body(_unit(**unit))), 422, *needles)


@pytest.mark.django_db
def test_another_members_controlnet_is_unknown_and_disabled_units_are_ignored(api, alices_controlnet) -> None:
    body = _body(_unit(model="alice-lines"))
    _assert_refused(api("charlie").post("/sdapi/v1/txt2img", body), 422, "unknown ControlNet model 'alice-lines'")
    # A disabled unit is ignored, even an invalid one: the job is a plain txt2img.
    response = api("charlie").post("/api/v1/jobs", _body(_unit(enabled=False, weight=99, model="nope")))
    assert response.status_code == 201, response.content
    assert Job.objects.get(public_id=response.json()["id"]).params["controlnet_units"] == []


@pytest.mark.django_db
def test_an_unknown_controlnet_stores_no_file(api, public_controlnet) -> None:
    inputs = settings.DATA_DIR / "users" / "alice" / "inputs"
    before = sorted(inputs.rglob("*")) if inputs.exists() else []
    body = {**_body(_unit(), _unit(model="nope", image=_b64(_rectangle_png(box=(1, 1, 9, 9))))), "init_images": [_b64(_rectangle_png((72, 64)))]}
    _assert_refused(api("alice").post("/sdapi/v1/img2img", body), 422, "args[1].model", "unknown ControlNet model 'nope'")
    assert (sorted(inputs.rglob("*")) if inputs.exists() else []) == before


@pytest.mark.django_db
def test_native_api_refuses_bad_units_in_its_own_shape(api, public_controlnet) -> None:
    response = api("alice").post("/api/v1/jobs", _body(_unit(weight=3.5)))
    assert response.status_code == 400
    assert response.json()["field"] == "alwayson_scripts.controlnet.args[0].weight"
    response = api("alice").post("/api/v1/jobs", _body(_unit(model="nope")))
    assert response.status_code == 400 and "unknown ControlNet model 'nope'" in response.json()["error"]
    response = api("alice").post("/api/v1/jobs", _body(_unit(image="https://example.com/x.png")))
    assert response.status_code == 400 and "URLs are not accepted here" in response.json()["error"]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_units_are_resolved_stored_and_part_of_the_batch_key(api, alices_controlnet, public_controlnet) -> None:
    webuiapi_style = _unit(model=f"alice-lines [{'0' * 8}]", image="data:image/png;base64," + _b64(_rectangle_png()))
    response = api("alice").post("/api/v1/jobs", _body(webuiapi_style, _unit(module="invert", weight=0.5)))
    assert response.status_code == 201, response.content
    job = Job.objects.get(public_id=response.json()["id"])
    first, second = job.params["controlnet_units"]
    alices_model, _public = JobSpec.from_json(job.params).controlnet_models
    assert (first["model"], alices_model.key) == ("alice-lines", "users/alice/models/ControlNet/" + alices_controlnet.name)
    assert second["model"] == PUBLIC_CONTROLNET and second["module"] == "invert" and second["weight"] == 0.5
    assert first["image"] == second["image"]  # the same picture is stored once, by content
    assert first["image"].startswith("users/alice/inputs/") and (settings.DATA_DIR / first["image"]).is_file()
    shown = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()
    assert "model_path" not in str(shown["params"]) and str(settings.DATA_DIR) not in str(shown)
    assert alices_model.sha256 not in str(shown) and "model_sha256" not in str(shown)

    same = Job.objects.get(public_id=api("alice").post("/api/v1/jobs", _body(webuiapi_style, _unit(module="invert", weight=0.5))).json()["id"])
    other_image = _unit(image=_b64(_rectangle_png(box=(2, 2, 30, 30))), module="invert", weight=0.5)
    other = Job.objects.get(public_id=api("alice").post("/api/v1/jobs", _body(webuiapi_style, other_image)).json()["id"])
    plain = Job.objects.get(public_id=api("alice").post("/api/v1/jobs", _body()).json()["id"])
    assert same.batch_key == job.batch_key
    assert len({job.batch_key, other.batch_key, plain.batch_key}) == 3


@pytest.mark.django_db
def test_img2img_unit_without_an_image_uses_the_init_image(api, public_controlnet) -> None:
    body = {**_body(_unit(image=None)), "init_images": [_b64(_rectangle_png())]}
    response = api("alice").post("/api/v1/jobs", {**body, "kind": "img2img"})
    assert response.status_code == 201, response.content
    params = Job.objects.get(public_id=response.json()["id"]).params
    assert params["controlnet_units"][0]["image"] == params["init_images"][0]


# =============================================================================================
# Generating for real: a running platform (web + one Celery worker)
# =============================================================================================


def _install_controlnets(platform) -> None:
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    from runtime.checkpoints.loading import get_architecture
    from runtime.controlnet import controlnet_to_ldm

    folder = platform.data_dir / "public" / "models" / "ControlNet"
    write_tiny_controlnet(folder / f"{PUBLIC_CONTROLNET}.safetensors", seed=0)
    write_tiny_controlnet(folder / "tiny-other.safetensors", seed=7, layout="diffusers")
    config = dict(UNet2DConditionModel.load_config(get_architecture("tiny-sd").config_dir / "unet"))
    config["cross_attention_dim"] = 48  # made for another base model
    other = ControlNetModel.from_unet(UNet2DConditionModel.from_config(config))
    save_file({k: v.to(torch.float16).contiguous() for k, v in controlnet_to_ldm(other.state_dict()).items()},
              str(folder / "for-another-base.safetensors"))


@pytest.fixture(scope="module")
def platform():
    from tests.harness import running_platform

    # Fetching image URLs from 127.0.0.1 is allowed here only: the test's image server is local.
    with running_platform(
        workers=1, env_overrides={"ATELIER_FETCH_ALLOW_PRIVATE": "1"}, before_start=_install_controlnets
    ) as platform:
        yield platform


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def _txt2img(platform, user: str, body: dict) -> dict:
    response = platform.post(user, "/sdapi/v1/txt2img", body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.e2e
def test_weight_zero_is_the_plain_image_weight_one_changes_it_and_the_canny_map_comes_back(platform) -> None:
    plain = _txt2img(platform, "alice", _body())
    assert len(plain["images"]) == 1
    zero = _txt2img(platform, "alice", _body(_unit(weight=0.0)))
    full = _txt2img(platform, "alice", _body(_unit(weight=1.0)))
    assert len(zero["images"]) == len(full["images"]) == 2  # the image, then the detect map
    assert np.abs(_decode(zero["images"][0]) - _decode(plain["images"][0])).max() <= 1
    assert np.abs(_decode(full["images"][0]) - _decode(plain["images"][0])).mean() > 3

    detect_map = _decode(full["images"][1])
    assert detect_map.shape == (64, 64, 3) and set(np.unique(detect_map)) == {0, 255}  # canny edges
    assert detect_map[32, 32].tolist() == [0, 0, 0] and detect_map[20:44, 15:18].max() == 255  # the left edge

    info = __import__("json").loads(full["info"])
    entry = info["extra_generation_params"]["ControlNet 0"]
    assert entry.startswith(f"Module: canny, Model: {PUBLIC_CONTROLNET} [") and "Weight: 1.0" in entry
    infotext = Image.open(io.BytesIO(base64.b64decode(full["images"][0]))).info["parameters"]
    assert f'ControlNet 0: "Module: canny, Model: {PUBLIC_CONTROLNET} [' in infotext


@pytest.mark.e2e
def test_two_units_at_once_and_a_unit_that_asks_for_no_map(platform) -> None:
    one = _txt2img(platform, "bob", _body(_unit()))
    second = _unit(model="tiny-other", module="invert", weight=0.8, resize_mode="Resize and Fill",
                   image=_b64(_rectangle_png(size=(96, 64))))
    both = _txt2img(platform, "bob", _body(_unit(), second, {**_unit(), "enabled": False}))
    assert len(both["images"]) == 3  # one image, two detect maps
    assert np.abs(_decode(both["images"][0]) - _decode(one["images"][0])).mean() > 1  # the second unit counts
    inverted = _decode(both["images"][2])
    assert inverted[30, 20].tolist() == [0, 0, 0] and inverted[2, 32].tolist() == [255, 255, 255]  # inverted, border filled
    quiet = _txt2img(platform, "bob", _body(_unit(save_detected_map=False)))
    assert len(quiet["images"]) == 1 and np.array_equal(_decode(quiet["images"][0]), _decode(one["images"][0]))
    assert "ControlNet 1" in __import__("json").loads(both["info"])["extra_generation_params"]


@pytest.fixture
def image_server() -> Iterator[str]:
    payload = _rectangle_png((80, 64))
    with serving_png(payload, "pixabay.png") as url:
        yield url


@pytest.mark.e2e
def test_pai_image_link_form_returns_an_image_mask_url_only_the_owner_can_fetch(platform, image_server) -> None:
    import httpx

    pai_unit = {
        "image_link": image_server, "enabled": True, "module": "canny", "model": PUBLIC_CONTROLNET, "weight": 1,
        "resize_mode": "Crop and Resize", "low_vram": False, "processor_res": 512, "threshold_a": 100,
        "threshold_b": 200, "guidance_start": 0, "guidance_end": 1, "pixel_perfect": True,
        "control_mode": "Balanced", "input_mode": "simple", "batch_images": "", "output_dir": "", "loopback": False,
    }
    body = _body(pai_unit, n_iter=2)
    body["alwayson_scripts"].update({"save_dir": "tmp/outputs", "sd_model_checkpoint": "atelier-tiny.safetensors"})
    response = platform.post("alice", "/sdapi/v1/txt2img", body)
    assert response.status_code == 200, response.text
    parameters = response.json()["parameters"]
    assert response.json()["images"] == [] and parameters["status"] == 0
    assert len(parameters["image_url"].split(",")) == 2
    [mask_url] = parameters["image_mask_url"].split(",")
    downloaded = httpx.get(mask_url, headers=platform.headers("alice"))
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(downloaded.content)).size == (64, 64)
    saved = list((platform.data_dir / "users" / "alice" / "tmp" / "outputs").rglob("*-controlnet-0.png"))
    assert len(saved) == 1 and saved[0].read_bytes() == downloaded.content
    assert httpx.get(mask_url, headers=platform.headers("charlie")).status_code == 404  # not his
    assert httpx.get(mask_url, headers=platform.headers("bob")).status_code == 404  # same team, still not his

    plain = platform.post("alice", "/sdapi/v1/txt2img", {**_body(), "alwayson_scripts": {"save_dir": "tmp/outputs"}})
    assert plain.json()["parameters"]["image_mask_url"] == ""


@pytest.mark.e2e
def test_img2img_with_controlnet_and_a_controlnet_for_another_base_model(platform) -> None:
    body = {**_body(_unit(image=None)), "init_images": [_b64(_rectangle_png())], "denoising_strength": 0.6, "steps": 3}
    response = platform.post("alice", "/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 2  # the unit used the init image

    response = platform.post("alice", "/sdapi/v1/txt2img", _body(_unit(model="for-another-base")))
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert "ControlNet 'for-another-base.safetensors' cannot be used with this checkpoint" in detail
    assert "another architecture" in detail
    again = _txt2img(platform, "alice", _body(_unit()))  # the worker carries on
    assert len(again["images"]) == 2
