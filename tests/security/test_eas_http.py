"""`/api/predict/<service>[/<rest>]` over HTTP, through the Django test client on the real URLconf
and database: the exact answers the SDK parses, and who may reach which queue (a service's token
reaches only that service; a wrong token or unknown service is 401; bad parameters are a 400
naming the parameter; an index that does not exist is an empty answer, never a 500)."""

from __future__ import annotations

import base64
import json

import pytest

from inference.eas.frames import decode_attributes, decode_frame_list
from inference.eas.queues import SINK, queue_put, service_create, service_token_create

pytestmark = pytest.mark.django_db

PROTOBUF = "application/vnd.google.protobuf"
SDK_HEADERS = {"HTTP_X_EAS_QUEUESERVICE_REDIS_UID": "u1", "HTTP_X_EAS_QUEUESERVICE_REDIS_GID": "eas"}


@pytest.fixture
def services(personas, tiny_checkpoint_path):
    """alice's service and charlie's (tenant B), each with a token."""
    alices = service_create(name="sd_async", owner=personas["alice"], max_payload_bytes=4096)
    charlies = service_create(name="charlies.svc", owner=personas["charlie"])
    return {
        "alice": (alices, service_token_create(service=alices)[1]),
        "charlie": (charlies, service_token_create(service=charlies)[1]),
    }


def _call(client, method: str, path: str, token: str | None, body: bytes = b"", **headers):
    extra = {"HTTP_AUTHORIZATION": token} if token is not None else {}
    return client.generic(method, path, data=body, content_type="", **extra, **SDK_HEADERS, **headers)


def test_put_answers_the_bare_index_and_the_request_id_header(client, services):
    _, token = services["alice"]
    body = json.dumps({"prompt": "a cat", "steps": 2, "width": 64, "height": 64}).encode()
    first = _call(client, "POST", "/api/predict/sd_async/sdapi/v1/txt2img?task_id=job_001", token, body)
    second = _call(client, "POST", "/api/predict/sd_async/sdapi/v1/txt2img?task_id=job_002", f"Bearer {token}", body)
    assert (first.status_code, first.content, second.content) == (200, b"1", b"2")
    assert first["Content-Type"].startswith("text/plain")
    request_id = first["X-Eas-Queueservice-Request-Id"]
    assert request_id and request_id != second["X-Eas-Queueservice-Request-Id"]
    attrs = _call(client, "GET", "/api/predict/sd_async?_attrs_=true", token).json()
    assert attrs["stream.length"] == "2" and attrs["meta.maxPayloadBytes"] == "4096"


def test_sink_get_commit_delete_truncate_speak_the_sdks_formats(client, services):
    service, token = services["alice"]
    for n in range(4):
        queue_put(service=service, queue=SINK, data=f"result {n}".encode(), tags={"task_id": f"t{n}"})
    sink = "/api/predict/sd_async/sink"
    raw = _call(client, "GET", f"{sink}?_index_=0&_length_=2&_timeout_=5s&_raw_=false&_auto_delete_=false", token,
                HTTP_ACCEPT=PROTOBUF)
    assert raw.status_code == 200 and raw["Content-Type"] == PROTOBUF
    frames = decode_frame_list(raw.content)
    assert [(index, tags["task_id"], data) for index, tags, data, _ in frames] == [(1, "t0", b"result 0"), (2, "t1", b"result 1")]
    as_json = _call(client, "GET", f"{sink}?_index_=3&_length_=1&_timeout_=1s&task_id=t2", token).json()
    assert as_json == [{"index": 3, "tags": {"task_id": "t2", "requestId": as_json[0]["tags"]["requestId"]},
                        "data": base64.b64encode(b"result 2").decode()}]
    assert _call(client, "PUT", f"{sink}?_indexes_=1,2", token).content == b"OK"
    assert _call(client, "DELETE", f"{sink}?_indexes_=99", token).status_code == 200
    assert _call(client, "DELETE", f"{sink}?_index_=5&_trunc_=true", token).status_code == 200
    empty = _call(client, "GET", f"{sink}?_index_=0&_length_=1&_timeout_=0s", token, HTTP_ACCEPT=PROTOBUF)
    assert (empty.status_code, empty.content) == (204, b"")
    attrs = _call(client, "GET", f"{sink}?_attrs_=true", token, HTTP_ACCEPT=PROTOBUF)
    assert decode_attributes(attrs.content)["stream.length"] == "0"


def test_a_missing_index_is_an_empty_answer_not_an_error(client, services):
    _, token = services["alice"]
    assert _call(client, "GET", "/api/predict/sd_async/sink?_search_=true&_index_=12345", token).json() == {}
    assert _call(client, "GET", "/api/predict/sd_async?_search_=true&_index_=7", token).json() == {}
    got = _call(client, "GET", "/api/predict/sd_async/sink?_index_=12345&_length_=3&_timeout_=0s", token)
    assert got.status_code == 204
    assert _call(client, "PUT", "/api/predict/sd_async/sink?_indexes_=12345", token).status_code == 200


def test_wrong_tokens_and_unknown_services_are_401_and_reach_nothing(client, services, tokens):
    alices, token = services["alice"]
    queue_put(service=alices, queue=SINK, data=b"alice's secret result")
    _, charlies_token = services["charlie"]
    for header in (None, "", "wrong", charlies_token, f"Bearer {charlies_token}", tokens["alice"]):
        for method, path in (
            ("GET", "/api/predict/sd_async/sink?_index_=0&_length_=5&_timeout_=0s"),
            ("GET", "/api/predict/sd_async/sink?_attrs_=true"),
            ("POST", "/api/predict/sd_async/sdapi/v1/txt2img"),
            ("PUT", "/api/predict/sd_async/sink?_indexes_=1"),
            ("DELETE", "/api/predict/sd_async/sink?_index_=9&_trunc_=true"),
        ):
            response = _call(client, method, path, header, b"{}")
            assert response.status_code == 401, (header, method, path)
            assert b"secret" not in response.content
    unknown = _call(client, "GET", "/api/predict/no-such-service/sink?_attrs_=true", token)
    assert (unknown.status_code, unknown.content) == (
        401, _call(client, "GET", "/api/predict/sd_async/sink?_attrs_=true", "wrong").content
    )  # no service enumeration
    assert _call(client, "GET", "/api/predict/sd_async/sink?_index_=0&_length_=5", token).status_code == 200


def test_charlie_cannot_read_alices_sink_with_his_own_services_token(client, services):
    alices, _ = services["alice"]
    queue_put(service=alices, queue=SINK, data=b"alice's result")
    _, charlies_token = services["charlie"]
    response = _call(client, "GET", "/api/predict/sd_async/sink?_index_=0&_length_=5&_timeout_=0s", charlies_token)
    assert response.status_code == 401
    own = _call(client, "GET", "/api/predict/charlies.svc/sink?_index_=0&_length_=5&_timeout_=0s", charlies_token)
    assert own.status_code == 204  # his own, empty sink


def test_oversized_payloads_are_413_with_a_message(client, services):
    _, token = services["alice"]
    response = _call(client, "POST", "/api/predict/sd_async/sdapi/v1/txt2img", token, b"x" * 5000)
    assert response.status_code == 413 and b"4096 bytes" in response.content


def test_a_full_queue_is_429(client, personas):
    service = service_create(name="tiny.q", owner=personas["alice"], max_queue_length=1)
    _, token = service_token_create(service=service)
    assert _call(client, "POST", "/api/predict/tiny.q/sink", token, b"one").status_code == 200
    full = _call(client, "POST", "/api/predict/tiny.q/sink", token, b"two")
    assert full.status_code == 429 and b"maximum" in full.content


@pytest.mark.parametrize(("method", "query", "names"), [
    ("PUT", "", "_indexes_"),
    ("PUT", "?_indexes_=1,x", "_indexes_"),
    ("DELETE", "?_trunc_=true", "_index_"),
    ("GET", "?_search_=true&_index_=abc", "_index_"),
    ("GET", "?_index_=0&_timeout_=soon", "_timeout_"),
    ("GET", "?_attrs_=maybe", "_attrs_"),
    ("GET", "?_index_=0&_length_=0", "_length_"),
    ("POST", "?_priority_=high", "_priority_"),
    # found by the Schemathesis run (tests/e2e/test_api_fuzz.py):
    ("POST", "?_priority_=%2B1", "_priority_"),  # int() took "+1"; the document says digits
    ("GET", "?_index_=%D9%A3", "_index_"),  # and other scripts' digits
    ("GET", "?_attrs_=true&_search_=maybe", "_search_"),  # a flag after the branch taken was never read
    ("POST", "?tag%00=x", "tag"),  # a NUL in a tag was a 500 on PostgreSQL
    ("POST", "?a=%03", "tag"),
])
def test_bad_parameters_are_a_400_naming_them(client, services, method, query, names):
    _, token = services["alice"]
    response = _call(client, method, f"/api/predict/sd_async/sink{query}", token, b"{}")
    assert response.status_code == 400 and names.encode() in response.content


def test_watch_over_plain_http_is_refused_with_a_message(client, services):
    _, token = services["alice"]
    response = _call(client, "GET", "/api/predict/sd_async/sink?_watch_=true&_index_=0&_window_=5", token)
    assert response.status_code == 400 and b"websocket" in response.content


def test_operators_list_services_with_endpoint_and_depth_and_issue_and_revoke_tokens(client, services, personas):
    from inference.eas.models import EasService, EasServiceToken
    from inference.eas.queues import EasAuthError, service_authenticate

    alices, _ = services["alice"]
    queue_put(service=alices, queue=SINK, data=b"r")
    client.force_login(personas["admin"])
    listing = client.get("/admin/inference/easservice/")
    assert listing.status_code == 200 and b"/api/predict/sd_async" in listing.content
    added = client.post("/admin/inference/easservice/add/", {
        "name": "from-admin", "owner": personas["bob"].pk, "default_checkpoint": "", "max_payload_bytes": 8192,
        "max_queue_length": 100, "max_sink_uncommitted": 10, "result_retention_hours": 24,
        "tokens-TOTAL_FORMS": 0, "tokens-INITIAL_FORMS": 0,
    }, follow=True)
    service = EasService.objects.get(name="from-admin")
    assert service.owner == personas["bob"] and service.tenant.slug == "studio-a"
    raw = next(m.message for m in added.context["messages"] if "Token for from-admin" in m.message).split(": ")[1].split()[0]
    assert service_authenticate(name="from-admin", authorization=raw) == service
    token = EasServiceToken.objects.get(service=service)
    client.post("/admin/inference/easservicetoken/", {"action": "revoke", "_selected_action": [token.pk]})
    with pytest.raises(EasAuthError):
        service_authenticate(name="from-admin", authorization=raw)
    client.force_login(personas["alice"])  # a member, not an operator
    assert client.get("/admin/inference/easservice/").status_code in (302, 403)
