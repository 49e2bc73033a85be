"""A widely used third-party A1111 client (webuiapi, from PyPI, unmodified) against a running
platform: list and switch models through options, txt2img, img2img and inpainting, read `info`
and the PNG infotext; a VAE override; PAI-EAS's `save_dir`, `image_link` and `id_task`;
`webuiapi.ControlNetUnit` and the ControlNet extension's list routes."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from runtime.tiny.controlnet import write_tiny_controlnet
from runtime.tiny.hypernetwork import write_tiny_hypernetwork
from runtime.tiny.lora import write_tiny_lora
from runtime.tiny.model import write_tiny_vae
from tests.harness import Platform, running_platform, serving_png

pytestmark = pytest.mark.e2e


def _install_public_models(platform: Platform) -> None:
    models = platform.data_dir / "public" / "models"
    write_tiny_vae(models / "VAE" / "tiny-vae.safetensors", seed=1)
    write_tiny_lora(models / "Lora" / "tiny-style.safetensors", seed=2)
    write_tiny_hypernetwork(models / "hypernetworks" / "tiny-hyper.safetensors", width=32, seed=3, fmt="safetensors")
    write_tiny_controlnet(models / "ControlNet" / "control_tiny_canny.safetensors", seed=4)


@pytest.fixture(scope="module")
def platform():
    # Fetching image URLs from 127.0.0.1 is allowed here only: the test's image server is local.
    # (tests/a1111/test_sdapi_routes.py shows the default refuses private addresses.)
    with running_platform(
        workers=1, env_overrides={"ATELIER_FETCH_ALLOW_PRIVATE": "1"}, before_start=_install_public_models
    ) as platform:
        yield platform


def pattern(size: int = 64) -> Image.Image:
    """A picture with structure, so a changed pixel is visible."""
    grid = np.indices((size, size)).sum(axis=0) % 16 < 8
    array = np.stack([grid * 220, (~grid) * 180, np.full((size, size), 60)], axis=-1).astype(np.uint8)
    return Image.fromarray(array)


def client(platform: Platform, user: str) -> webuiapi.WebUIApi:
    # What an A1111 user configures for --api-auth: HTTP Basic, here username + API token.
    return webuiapi.WebUIApi(
        baseurl=f"{platform.base_url}/sdapi/v1", username=user, password=platform.token(user), sampler="Euler a", steps=6
    )


def test_webuiapi_lists_switches_and_generates(platform: Platform) -> None:
    alice = client(platform, "alice")
    names = alice.util_get_model_names()
    assert len(names) == 1 and names[0].startswith("atelier-tiny.safetensors [")
    alice.util_set_model("atelier-tiny")
    assert alice.util_get_current_model() == names[0]
    assert "Euler a" in alice.util_get_sampler_names()

    result = alice.txt2img(prompt="a lighthouse at dawn", negative_prompt="fog", width=64, height=64, seed=42, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.info["seed"] == 42 and result.info["all_seeds"] == [42, 43]
    assert result.info["sd_model_name"] == "atelier-tiny" and len(result.info["sd_model_hash"]) == 10
    assert result.info["sampler_name"] == "Euler a" and result.info["steps"] == 6
    infotext = result.image.info["parameters"]
    assert infotext.startswith("a lighthouse at dawn\nNegative prompt: fog\nSteps: 6, Sampler: Euler a")
    assert "Seed: 42" in infotext and result.info["infotexts"][1].count("Seed: 43") == 1
    assert result.parameters["prompt"] == "a lighthouse at dawn" and result.parameters["seed"] == 42

    read_back = alice.png_info(result.image)  # the PNG's own text chunk, parsed server-side
    assert read_back.info == infotext and read_back.json["parameters"]["Seed"] == "42"

    progress = alice.get_progress()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0  # util_wait_for_ready's idea of idle


def test_webuiapi_styles_are_merged_as_a1111_merges_them(platform: Platform) -> None:
    """Issue 20: `styles` names styles from /sdapi/v1/prompt-styles (here a public one the
    migration seeds); the image's infotext has the merged prompt, `parameters` what was sent."""
    alice = client(platform, "alice")
    listed = {style["name"]: style for style in alice.get_prompt_styles()}
    assert listed["Quality tags"]["prompt"] == "masterpiece, best quality"
    result = alice.txt2img(prompt="a kite", negative_prompt="fog", styles=["Quality tags"], width=64, height=64,
                           steps=2, seed=5)
    assert result.info["prompt"] == "a kite, masterpiece, best quality" and result.info["styles"] == ["Quality tags"]
    assert result.image.info["parameters"].startswith(
        "a kite, masterpiece, best quality\nNegative prompt: fog, lowres, blurry, jpeg artifacts\n")
    assert result.parameters["prompt"] == "a kite" and result.parameters["styles"] == ["Quality tags"]
    with pytest.raises(RuntimeError, match="422"):
        alice.txt2img(prompt="a kite", styles=["No such style"], width=64, height=64, steps=2)


def test_prompt_editing_alternation_and_composable_diffusion_are_applied(platform: Platform) -> None:
    """Issue 21, item 1 over HTTP: prompt schedules and AND run (no "not honoured" note; the
    infotext keeps the prompt as written) and change the image."""
    alice = client(platform, "alice")
    # over 4 steps: "lighthouse" and "fog" for steps 0-1 (A1111 counts step 1's text for step 0 too)
    prompt, negative = "a [lighthouse:kite:0.25] at [dawn|dusk]", "[fog::1]"
    scheduled = alice.txt2img(prompt=prompt, negative_prompt=negative, width=64, height=64, steps=4, seed=11)
    plain = alice.txt2img(prompt="a lighthouse at dawn", negative_prompt="fog", width=64, height=64, steps=4, seed=11)
    composed = alice.txt2img(prompt="a lighthouse at dawn AND a kite :1.2", negative_prompt="fog", width=64, height=64,
                             steps=4, seed=11)
    assert scheduled.image.info["parameters"].startswith(f"{prompt}\nNegative prompt: {negative}\n")
    assert not scheduled.info["notes"] and not composed.info["notes"]
    assert not np.array_equal(np.asarray(scheduled.image), np.asarray(plain.image))
    assert not np.array_equal(np.asarray(composed.image), np.asarray(plain.image))


def test_another_member_sees_neither_alices_jobs_nor_her_options(platform: Platform) -> None:
    bob, charlie = client(platform, "bob"), client(platform, "charlie")
    assert charlie.get_progress()["state"]["job_count"] == 0
    assert bob.get_options()["sd_model_checkpoint"].startswith("atelier-tiny")
    charlie.set_options({"send_seed": False})  # any key of A1111's options object, stored per member
    assert charlie.get_options()["send_seed"] is False and bob.get_options()["send_seed"] is True
    assert platform.get("charlie", "/api/v1/jobs").json()["jobs"] == []
    # A1111's override_settings_restore_afterwards=False: the overrides stay the member's options
    charlie.txt2img(prompt="x", width=64, height=64, steps=1, override_settings={"s_noise": 0.95, "samples_format": "jpg"},
                    override_settings_restore_afterwards=False)
    assert (charlie.get_options()["s_noise"], charlie.get_options()["samples_format"]) == (0.95, "jpg")
    intruder = webuiapi.WebUIApi(baseurl=f"{platform.base_url}/sdapi/v1", username="charlie", password="wrong")
    with pytest.raises(RuntimeError, match="401"):  # webuiapi raises on a non-200 generation answer
        intruder.txt2img(prompt="x", width=64, height=64)


def test_webuiapi_img2img_and_inpainting(platform: Platform) -> None:
    alice = client(platform, "alice")
    init = pattern()
    result = alice.img2img(images=[init], prompt="a tiled floor", seed=7, width=64, height=64, denoising_strength=0.5)
    assert result.image.size == (64, 64)
    assert result.info["denoising_strength"] == 0.5 and result.info["seed"] == 7
    assert "Denoising strength: 0.5" in result.image.info["parameters"]
    again = alice.img2img(images=[init], prompt="a tiled floor", seed=7, width=64, height=64, denoising_strength=0.5)
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))  # same seed, same image

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = alice.img2img(
        images=[init], mask_image=mask, prompt="a red square", seed=7, width=64, height=64,
        denoising_strength=1.0, mask_blur=0, inpainting_fill=1,
    )
    before, after = np.asarray(init).astype(int), np.asarray(inpainted.image.convert("RGB")).astype(int)
    outside = np.asarray(mask) == 0
    assert np.abs(after[outside] - before[outside]).max() <= 1  # unmasked pixels kept
    assert np.abs(after[20:44, 20:44] - before[20:44, 20:44]).mean() > 10  # the masked square was repainted
    infotext = inpainted.image.info["parameters"]
    assert "Mask blur: 0" in infotext and "Inpaint area: Only masked" in infotext and "Masked content: original" in infotext

    # SD upscale through script_name with A1111's script_args [info, overlap, upscaler index, scale] (issue 21)
    upscaled = alice.img2img(
        images=[init], prompt="a tiled floor", seed=7, width=64, height=64, steps=2, denoising_strength=0.5,
        batch_size=4, script_name="SD upscale", script_args=["", 0, 1, 2],
    )
    assert [image.size for image in upscaled.images] == [(128, 128)]
    assert "SD upscale upscaler: Lanczos" in upscaled.image.info["parameters"] and upscaled.info["notes"] == []


def test_vae_override_per_request_and_per_member(platform: Platform) -> None:
    bob = client(platform, "bob")
    vaes = platform.get("bob", "/sdapi/v1/sd-vae").json()
    assert [v["model_name"] for v in vaes] == ["tiny-vae"]
    common = {"prompt": "a harbour", "seed": 11, "width": 64, "height": 64}
    own = bob.txt2img(**common)
    swapped = bob.txt2img(**common, override_settings={"sd_vae": "tiny-vae.safetensors"})
    assert not np.array_equal(np.asarray(own.image), np.asarray(swapped.image))
    assert swapped.info["sd_vae_name"] == "tiny-vae" and own.info["sd_vae_name"] is None
    assert "VAE: tiny-vae" in swapped.image.info["parameters"]
    bob.set_options({"sd_vae": "tiny-vae"})  # bob's own default from now on; alice's stays "Automatic"
    by_option = bob.txt2img(**common)
    assert np.array_equal(np.asarray(by_option.image), np.asarray(swapped.image))
    assert client(platform, "alice").get_options()["sd_vae"] == "Automatic"


@pytest.fixture
def image_server() -> Iterator[str]:
    buffer = io.BytesIO()
    pattern().save(buffer, format="PNG")
    payload = buffer.getvalue()
    with serving_png(payload, "input.png") as url:
        yield url


def test_pai_eas_extras_save_dir_image_link_and_id_task(platform: Platform, image_server: str) -> None:
    body = {
        "prompt": "a lantern", "steps": 4, "width": 64, "height": 64, "seed": 5, "batch_size": 2,
        "denoising_strength": 0.6,
        "alwayson_scripts": {
            "image_link": image_server, "save_dir": "tmp/outputs", "id_task": "14837", "uid": "123",
            "sd_model_checkpoint": "atelier-tiny.safetensors", "sd_vae": "Automatic",
        },
    }
    response = platform.post("alice", "/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["images"] == []
    parameters = payload["parameters"]
    assert parameters["id_task"] == "14837" and parameters["status"] == 0 and parameters["error_msg"] == ""
    assert parameters["seed"] == "5,6" and parameters["total_time"] > 0
    urls = parameters["image_url"].split(",")
    paths = parameters["image_path"].split(",")
    assert len(urls) == 2 and all(path.startswith("tmp/outputs/") for path in paths)
    for url, path in zip(urls, paths, strict=True):
        saved = platform.data_dir / "users" / "alice" / path
        assert saved.is_file()
        downloaded = httpx.get(url, headers=platform.headers("alice"))
        assert downloaded.status_code == 200 and downloaded.content == saved.read_bytes()
        assert httpx.get(url, headers=platform.headers("charlie")).status_code == 404  # charlie: not his
    assert not list((platform.data_dir / "users" / "alice" / "outputs").rglob(f"*{urls[0].split('/')[-3]}*"))

    # txt2img takes save_dir too; without save_dir, id_task is still echoed.
    response = platform.post("alice", "/sdapi/v1/txt2img", {
        "prompt": "x", "steps": 2, "width": 64, "height": 64, "alwayson_scripts": {"id_task": "t-2"},
    })
    assert response.status_code == 200 and response.json()["parameters"]["id_task"] == "t-2"
    assert len(response.json()["images"]) == 1
    decoded = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
    assert decoded.size == (64, 64)


def test_loras_and_hypernetworks_from_the_prompt(platform: Platform) -> None:
    bob = client(platform, "bob")
    assert [lora["name"] for lora in bob.get_loras()] == ["tiny-style"]
    common = {"seed": 21, "width": 64, "height": 64}
    plain = px(bob.txt2img(prompt="a quiet street", **common).image)
    zero = bob.txt2img(prompt="a quiet street <lora:tiny-style:0>", **common)
    assert np.abs(px(zero.image) - plain).max() <= 1  # weight 0: the plain model
    full = bob.txt2img(prompt="a quiet street <lora:tiny-style:1>", **common)
    assert np.abs(px(full.image) - plain).max() > 10
    assert "<lora:tiny-style:1>" in full.image.info["parameters"]  # the infotext keeps the tag, as A1111
    hyper = bob.txt2img(prompt="a quiet street <hypernet:tiny-hyper:1>", **common)
    assert np.abs(px(hyper.image) - plain).max() > 10
    after = bob.txt2img(prompt="a quiet street", **common)  # nothing leaks into the next batch
    assert np.abs(px(after.image) - plain).max() <= 1


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_webuiapi_controlnet_unit(platform: Platform) -> None:
    charlie = client(platform, "charlie")
    [model] = charlie.controlnet_model_list()
    assert model.startswith("control_tiny_canny [") and "canny" in charlie.controlnet_module_list()
    edges = Image.new("RGB", (64, 64), "black")
    edges.paste((255, 255, 255), (16, 16, 48, 48))
    common = {"prompt": "a white box", "seed": 9, "width": 64, "height": 64, "steps": 3}
    # alwayson_scripts={} each call: webuiapi's default dict is shared and keeps the units otherwise.
    plain = charlie.txt2img(**common, alwayson_scripts={})
    unit = webuiapi.ControlNetUnit(
        image=edges, module="canny", model=model, weight=1.0, resize_mode="Crop and Resize", processor_res=64,
        threshold_a=100, threshold_b=200, control_mode=0,
    )
    controlled = charlie.txt2img(**common, controlnet_units=[unit], alwayson_scripts={})
    assert len(controlled.images) == 2  # the image, then the canny detect map (as the extension appends it)
    assert np.abs(px(controlled.image) - px(plain.image)).mean() > 3
    assert set(np.unique(np.asarray(controlled.images[1]))) == {0, 255}
    assert 'ControlNet 0: "Module: canny, Model: control_tiny_canny [' in controlled.image.info["parameters"]
    unit.weight = 0.0
    zero = charlie.txt2img(**common, controlnet_units=[unit], alwayson_scripts={})
    assert np.abs(px(zero.image) - px(plain.image)).max() <= 1
    with pytest.raises(RuntimeError, match="weight"):  # webuiapi raises on a non-200 answer
        unit.weight = 3.5
        charlie.txt2img(**common, controlnet_units=[unit], alwayson_scripts={})


def test_webuiapi_scripts_run_as_one_job_group(platform: Platform) -> None:
    """Issue 21, item 4: `script_name`/`script_args` in A1111 1.10's positional layout."""
    from a1111.xyz_grid import grid_layout

    alice = client(platform, "alice")
    assert {"x/y/z plot", "prompt matrix", "controlnet"} <= set(alice.get_scripts()["txt2img"])
    assert not alice.has_controlnet  # webuiapi looks for "controlnet m2m": unchanged
    common = {"width": 64, "height": 64, "steps": 2, "seed": 21, "alwayson_scripts": {}}
    # X type 4 (Steps in A1111's txt2img list): 2, 3; Y, Z: Nothing; Draw legend; Include Sub Images
    plot = alice.txt2img(prompt="a red barn", script_name="X/Y/Z plot",
                         script_args=[4, "2, 3", [], 0, "", [], 0, "", [], True, True], **common)
    grid, cells = plot.images[0], plot.images[1:]
    assert [cell.size for cell in cells] == [(64, 64), (64, 64)] and plot.info["index_of_first_image"] == 1
    assert plot.info["all_seeds"] == [21, 21, 21] and "Steps: 3" in cells[1].info["parameters"]
    layout = grid_layout((2, 1, 1), (64, 64), (("Steps: 2", "Steps: 3"), ("",), ("",)))
    assert grid.size == layout.size
    for cell, (left, top) in zip(cells, layout.boxes, strict=True):  # each tile is its cell's image
        assert np.array_equal(px(grid.crop((left, top, left + 64, top + 64))), px(cell))
    group = platform.get("alice", f"/api/v1/job-groups/{plot.info['job_group']}").json()
    assert group["status"] == "finished" and group["cells"]["succeeded"] == 2

    matrix = alice.txt2img(prompt="a red barn|at night", script_name="Prompt matrix", script_args=[], **common)
    assert len(matrix.images) == 3 and matrix.info["all_prompts"][1:] == ["a red barn", "a red barn, at night"]
    assert matrix.images[2].info["parameters"].startswith("a red barn, at night\n")

    with pytest.raises(RuntimeError, match="422"):
        alice.txt2img(prompt="x", script_name="no such script", **common)
