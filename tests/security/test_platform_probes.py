"""`/healthz`, `/readyz` and `/metrics` (config/observability.py): who may call them and what they
never say. The probes are public and leak nothing; the metrics answer only the metrics token or
an operator's session."""

from __future__ import annotations

import json

import pytest
from django.conf import settings as django_settings

from inference.health import CHECKS

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "m3trics-" + "x" * 32


@pytest.fixture
def alices_job(personas, tiny_checkpoint_path):
    from a1111.generation import parse_generation_request
    from inference.services import job_submit

    return job_submit(user=personas["alice"], request=parse_generation_request({"prompt": "alice-secret-prompt", "steps": 2}))


def test_probes_are_public_and_name_nothing_of_anyones(client, alices_job) -> None:
    for path in ("/healthz", "/readyz"):
        response = client.get(path)
        assert response.status_code == 200, response.content
        assert response["Cache-Control"] == "no-store"
        body = response.content.decode()
        for secret in (alices_job.public_id, "alice", "studio-a", django_settings.SECRET_KEY, str(django_settings.DATA_DIR)):
            assert secret not in body, f"{path} names {secret!r}"
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ok", "checks": {name: {"ok": True} for name in CHECKS}}
    assert client.post("/readyz").status_code == 405  # nothing but GET and HEAD
    assert client.head("/healthz").status_code == 200


def test_probes_answer_the_pods_own_address_over_plain_http(client, settings) -> None:
    """A kubelet calls http://<pod ip>:8000/healthz: not an allowed host, not HTTPS."""
    settings.ALLOWED_HOSTS = ["atelier.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    for path in ("/healthz", "/readyz"):
        assert client.get(path, HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/", HTTP_HOST="10.1.2.3:8000").status_code == 400  # everything else is still checked


def test_a_failed_readiness_check_names_no_host_port_or_secret(client, settings) -> None:
    """The storage folder gone: a 503 that names the storage check, in the fixed vocabulary."""
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(django_settings.DATA_DIR / "no-such-folder-for-readyz")}}}
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["storage"] == {"ok": False, "reason": "the storage folder is missing or not writable"}
    assert body["checks"]["database"] == {"ok": True}
    assert "no-such-folder" not in response.content.decode() and str(django_settings.DATA_DIR) not in response.content.decode()


def _metrics(client, token: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.get("/metrics", **headers)


def test_metrics_refuse_anonymous_members_and_wrong_tokens(client, personas, tokens, settings, alices_job) -> None:
    settings.ATELIER_METRICS_TOKEN = METRICS_TOKEN
    assert _metrics(client).status_code == 401
    for wrong in (METRICS_TOKEN + "x", METRICS_TOKEN[:-1], tokens["alice"], tokens["charlie"], tokens["admin"]):
        response = _metrics(client, wrong)
        assert response.status_code == 401, wrong
        assert b"atelier_" not in response.content
    for name in ("alice", "charlie"):  # a tenant admin and a member of another tenant, by session
        client.force_login(personas[name])
        response = _metrics(client)
        assert response.status_code == 403 and b"atelier_" not in response.content
        client.logout()
    assert json.loads(_metrics(client).content)["field"] == "Authorization"


def test_an_empty_metrics_token_setting_refuses_every_bearer_token(client, settings) -> None:
    settings.ATELIER_METRICS_TOKEN = ""
    for token in ("", " ", "x", "Bearer"):
        assert _metrics(client, token).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer").status_code == 401


def test_metrics_answer_the_metrics_token_and_operators_sessions(client, personas, settings, alices_job) -> None:
    settings.ATELIER_METRICS_TOKEN = METRICS_TOKEN
    by_token = _metrics(client, METRICS_TOKEN)
    assert by_token.status_code == 200 and by_token["Content-Type"].startswith("text/plain")
    assert b'atelier_queue_depth{model_group="' in by_token.content
    assert b"alice-secret-prompt" not in by_token.content and alices_job.public_id.encode() not in by_token.content
    # from the pod's own address too (Prometheus scrapes pods), before the host check
    settings.ALLOWED_HOSTS = ["atelier.example.com"]
    assert _metrics(client, METRICS_TOKEN).status_code == 200
    settings.ALLOWED_HOSTS = ["testserver"]
    client.force_login(personas["admin"])
    assert _metrics(client).status_code == 200
