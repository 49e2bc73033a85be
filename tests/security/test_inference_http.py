"""Issue #13 (LOW): hostile JSON bodies and missing files are 4xx answers with a message, never a 500."""

from __future__ import annotations

import pytest

from inference.models import Job

pytestmark = pytest.mark.django_db

DEEP_ARRAY = "[" * 1500 + "]" * 1500
DEEP_OBJECT = '{"a":' * 1500 + "1" + "}" * 1500
JUST_TOO_DEEP = '{"prompt": "x", "override_settings": ' + '{"a":' * 64 + "1" + "}" * 64 + "}"  # 65 levels

JSON_ROUTES = ["/api/v1/jobs", "/sdapi/v1/txt2img", "/sdapi/v1/options", "/sdapi/v1/png-info"]


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def _message(response) -> str:
    payload = response.json()
    return payload.get("error") if response.request["PATH_INFO"].startswith("/api/") else payload["detail"]


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT, JUST_TOO_DEEP], ids=["array-1500", "object-1500", "depth-65"])
def test_deeply_nested_json_is_a_400_saying_so_on_every_json_endpoint(api, route, body) -> None:
    response = api("alice").post(route, body)
    assert response.status_code == 400, response.content[:300]
    assert "nested more than 64 levels" in _message(response)
    assert not Job.objects.exists()


def test_json_nested_within_the_limit_is_still_accepted(api) -> None:
    body = '{"prompt": "x", "steps": 2, "width": 64, "height": 64, "override_settings": ' + '{"a":' * 30 + "1" + "}" * 30 + "}"
    assert api("alice").post("/api/v1/jobs", body).status_code == 201


def test_the_one_json_reader_refuses_depth_without_recursing() -> None:
    from inference.http import JsonBodyError, parse_json

    assert parse_json(b'{"a": [[1]]}') == {"a": [[1]]}
    assert parse_json("[" * 64 + "]" * 64) is not None
    for raw in ("[" * 65 + "]" * 65, "[" * 100_000 + "]" * 100_000):
        with pytest.raises(JsonBodyError, match="nested more than 64 levels"):
            parse_json(raw)
    with pytest.raises(JsonBodyError, match="not valid JSON"):
        parse_json(b"{nope")


def test_an_output_file_removed_after_the_job_finished_is_a_404_with_a_message(api, personas) -> None:
    from inference.generation import parse_generation_request
    from inference.services import job_submit

    job = job_submit(user=personas["alice"], request=parse_generation_request({"prompt": "x"}))
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.SUCCEEDED, outputs=["users/alice/outputs/2000-01-01/gone-0.png"],
        control_maps=["users/alice/outputs/2000-01-01/gone-controlnet-0.png"],
    )
    for path in (f"/api/v1/jobs/{job.public_id}/images/0", f"/api/v1/jobs/{job.public_id}/control-maps/0"):
        response = api("alice").get(path)
        assert response.status_code == 404
        assert "no longer stored" in response.json()["error"]
    assert api("charlie").get(f"/api/v1/jobs/{job.public_id}/images/0").status_code == 404  # still scoped
