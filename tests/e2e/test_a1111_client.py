"""A widely used third-party A1111 client (webuiapi, from PyPI, unmodified) against a running
platform: list and switch models through options, txt2img, read `info` and the PNG infotext."""

from __future__ import annotations

import pytest
import webuiapi

from tests.harness import Platform, running_platform

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform():
    with running_platform(workers=1) as platform:
        yield platform


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


def test_another_member_sees_neither_alices_jobs_nor_her_options(platform: Platform) -> None:
    bob, charlie = client(platform, "bob"), client(platform, "charlie")
    assert charlie.get_progress()["state"]["job_count"] == 0
    assert bob.get_options()["sd_model_checkpoint"].startswith("atelier-tiny")
    assert platform.get("charlie", "/api/v1/jobs").json()["jobs"] == []
    intruder = webuiapi.WebUIApi(baseurl=f"{platform.base_url}/sdapi/v1", username="charlie", password="wrong")
    with pytest.raises(RuntimeError, match="401"):  # webuiapi raises on a non-200 generation answer
        intruder.txt2img(prompt="x", width=64, height=64)
