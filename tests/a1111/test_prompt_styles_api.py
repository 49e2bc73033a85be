"""`styles` on /sdapi/v1/txt2img|img2img and the EAS queue, and `GET /sdapi/v1/prompt-styles`:
the caller's own, team and public styles in A1111's shape, merged as A1111 merges them; an
unknown name (someone else's style included) is a 422 naming it. (The security side, who sees
whose styles, is in tests/security/test_prompt_styles.py.)"""

from __future__ import annotations

import json

import pytest

from inference.eas.models import EasItem
from inference.eas.queues import INPUT, queue_put, service_create
from inference.models import Job
from inference.sdapi.generate import parse_generation_body, styles_for_body
from tenants.models import PromptStyle, Tenant
from tenants.services import prompt_style_save

pytestmark = pytest.mark.django_db

TINY = {"prompt": "a lighthouse", "negative_prompt": "fog", "steps": 2, "width": 64, "height": 64, "seed": 7}


@pytest.fixture
def styles(personas, tiny_checkpoint_path) -> None:
    prompt_style_save(user=personas["alice"], name="Alice look", prompt="{prompt}, alice look", negative_prompt="blur")
    PromptStyle.objects.create(scope="tenant", tenant=Tenant.objects.get(slug="studio-a"), name="Brand",
                               prompt="brand poster of {prompt}", negative_prompt="")


def test_prompt_styles_lists_the_callers_styles_in_a1111s_shape(api, styles) -> None:
    listed = api("alice").get("/sdapi/v1/prompt-styles").json()
    assert all(set(item) == {"name", "prompt", "negative_prompt"} for item in listed)
    by_name = {item["name"]: item for item in listed}
    assert by_name["Alice look"] == {"name": "Alice look", "prompt": "{prompt}, alice look", "negative_prompt": "blur"}
    assert by_name["Brand"]["prompt"] == "brand poster of {prompt}" and "Watercolor" in by_name
    assert api(None).get("/sdapi/v1/prompt-styles").status_code == 401


def test_a_bodys_styles_are_merged_in_order_before_the_limits(personas, styles) -> None:
    body = {**TINY, "styles": ["Brand", "Alice look", "Quality tags"]}
    generation, _ = parse_generation_body(body, "txt2img", styles_for_body(personas["alice"], body))
    assert generation.prompt == "brand poster of a lighthouse, alice look, masterpiece, best quality"
    assert generation.negative_prompt == "fog, blur, lowres, blurry, jpeg artifacts"
    assert body["prompt"] == "a lighthouse"  # the echo shows what the client sent
    generation, _ = parse_generation_body({**TINY, "styles": []}, "txt2img", {})
    assert generation.prompt == "a lighthouse"


@pytest.mark.parametrize(
    ("styles_field", "needle"),
    [(["Nope"], "styles[0]: unknown style 'Nope'"), (["Brand", 3], "styles[1]"), ("Brand", "styles: must be a list")],
)
def test_a_bad_or_unknown_style_is_a_422_naming_it(api, styles, styles_field, needle) -> None:
    response = api("alice").post("/sdapi/v1/txt2img", {**TINY, "styles": styles_field})
    assert response.status_code == 422, response.content
    payload = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"} and needle in payload["detail"]
    assert not Job.objects.exists()


def test_a_merged_prompt_over_the_limit_is_refused_as_the_prompt(api, styles, settings) -> None:
    settings.ATELIER_MAX_PROMPT_CHARS = 30
    response = api("alice").post("/sdapi/v1/txt2img", {**TINY, "styles": ["Quality tags"]})
    assert response.status_code == 422 and "prompt" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_an_eas_request_uses_the_service_owners_styles(personas, styles) -> None:
    service = service_create(name="styled", owner=personas["alice"])
    item = queue_put(service=service, queue=INPUT, data=json.dumps({**TINY, "styles": ["Alice look"]}).encode(),
                     tags={}, route="sdapi/v1/txt2img", base_url="http://testserver/")  # submitted on commit
    job = EasItem.objects.select_related("job").get(pk=item.pk).job
    assert job.params["prompt"] == "a lighthouse, alice look" and job.params["negative_prompt"] == "fog, blur"
