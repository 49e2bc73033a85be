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
    from inference.api.errors import JsonBodyError, parse_json

    assert parse_json(b'{"a": [[1]]}') == {"a": [[1]]}
    assert parse_json("[" * 64 + "]" * 64) is not None
    for raw in ("[" * 65 + "]" * 65, "[" * 100_000 + "]" * 100_000):
        with pytest.raises(JsonBodyError, match="nested more than 64 levels"):
            parse_json(raw)
    with pytest.raises(JsonBodyError, match="not valid JSON"):
        parse_json(b"{nope")


def test_an_output_file_removed_after_the_job_finished_is_a_404_with_a_message(api, personas) -> None:
    from a1111.generation import parse_generation_request
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


def test_an_output_replaced_by_a_link_to_another_member_s_file_reads_as_missing(api, personas) -> None:
    """A member may put links in their own folder; reading through one must not reach another's."""
    from pathlib import Path

    from django.core.files.storage import default_storage

    from a1111.generation import parse_generation_request
    from inference.services import job_submit

    data = Path(default_storage.path(""))
    charlie_render = data / "users" / "charlie" / "outputs" / "2000-01-01" / "secret-0.png"
    charlie_render.parent.mkdir(parents=True, exist_ok=True)
    charlie_render.write_bytes(b"\x89PNG charlie's secret render")
    alice_output = data / "users" / "alice" / "outputs" / "2000-01-01" / "mine-0.png"
    alice_output.parent.mkdir(parents=True, exist_ok=True)
    alice_output.unlink(missing_ok=True)
    alice_output.symlink_to(charlie_render)
    job = job_submit(user=personas["alice"], request=parse_generation_request({"prompt": "x"}))
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, outputs=["users/alice/outputs/2000-01-01/mine-0.png"])
    response = api("alice").get(f"/api/v1/jobs/{job.public_id}/images/0")
    assert response.status_code == 404
    assert b"charlie" not in b"".join(response.streaming_content) if response.streaming else b"charlie" not in response.content
    # A link that stays inside her own folder still reads.
    own = alice_output.parent / "own-0.png"
    own.write_bytes(b"\x89PNG alice's")
    (alice_output.parent / "alias-0.png").unlink(missing_ok=True)
    (alice_output.parent / "alias-0.png").symlink_to(own)
    Job.objects.filter(pk=job.pk).update(outputs=["users/alice/outputs/2000-01-01/alias-0.png"])
    response = api("alice").get(f"/api/v1/jobs/{job.public_id}/images/0")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"\x89PNG alice's"
