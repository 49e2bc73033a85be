"""The services page (`/services/`): members and tenant admins create EAS async services, issue
tokens (shown once), revoke them and delete services, through the Django test client on the real
URLconf and database. alice is studio-a's tenant admin, bob a plain member of studio-a, charlie a
member of studio-b (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from django.conf import settings
from django.test import Client

from inference.eas.bridge import eas_pump
from inference.eas.models import EasItem, EasService, EasServiceToken
from inference.eas.queues import (
    INPUT,
    SINK,
    queue_put,
    service_create,
    service_token_create,
)
from inference.model_registry import model_list_for_user
from inference.models import Job

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r'id="new-token">(eas_[A-Za-z0-9_-]+)<')
BODY = json.dumps({"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}).encode()


def _create(client: Client, **fields: str):
    return client.post("/services/", {"name": "sd_async", **fields})


def _urls(service: EasService, token: EasServiceToken) -> list[tuple[str, str]]:
    base = f"/services/{service.public_id}"
    return [("post", f"{base}/tokens/"), ("post", f"{base}/tokens/{token.pk}/revoke/"),
            ("get", f"{base}/delete/"), ("post", f"{base}/delete/")]


def test_alice_creates_a_service_and_a_token_shown_once_that_works_until_revoked(
    client, personas, tiny_checkpoint_path
) -> None:
    checkpoint = model_list_for_user(personas["alice"])[0].title
    client.force_login(personas["alice"])
    assert "sd_async" not in client.get("/services/").content.decode()

    created = _create(client, default_checkpoint=checkpoint, max_payload_bytes="4096", result_retention_hours="24")
    service = EasService.objects.get(name="sd_async")
    assert created.status_code == 302 and created["Location"] == f"/services/#service-{service.public_id}"
    assert (service.owner, service.default_checkpoint, service.max_payload_bytes, service.result_retention_hours) == (
        personas["alice"], checkpoint, 4096, 24)
    page = client.get("/services/").content.decode()
    # What the SDK takes (host:port and the queue name), and the plain HTTP URL.
    assert '<code class="service-endpoint">testserver</code>' in page
    assert '<code class="service-url">http://testserver/api/predict/sd_async</code>' in page
    assert "sd_async/sink" in page and checkpoint in page

    issued = client.post(f"/services/{service.public_id}/tokens/", {"token_name": "ci"})
    assert issued.status_code == 200 and issued["Cache-Control"] == "no-store"
    raw = TOKEN.search(issued.content.decode())[1]
    stored = EasServiceToken.objects.get(service=service)
    assert (stored.name, stored.digest) == ("ci", hashlib.sha256(raw.encode()).hexdigest())
    page = client.get("/services/").content.decode()
    assert raw not in page and f"<code>{stored.prefix}…</code>" in page and "never" in page  # shown once, listed by prefix

    attributes = client.get("/api/predict/sd_async?_attrs_=true", HTTP_AUTHORIZATION=raw)
    assert attributes.status_code == 200 and attributes.json()["meta.maxPayloadBytes"] == "4096"
    stored.refresh_from_db()
    assert stored.last_used_at is not None and "never" not in client.get("/services/").content.decode()

    revoked = client.post(f"/services/{service.public_id}/tokens/{stored.pk}/revoke/")
    assert revoked.status_code == 200 and "revoked" in revoked.content.decode()
    assert f"<code>{stored.prefix}…</code>" not in revoked.content.decode()  # gone from the token list
    assert client.get("/api/predict/sd_async?_attrs_=true", HTTP_AUTHORIZATION=raw).status_code == 401


def test_the_page_shows_queue_depths(client, personas) -> None:
    service = service_create(name="sd_async", owner=personas["alice"])
    for _ in range(2):
        queue_put(service=service, queue=INPUT, data=BODY)
    queue_put(service=service, queue=SINK, data=b"{}")
    client.force_login(personas["alice"])
    page = client.get("/services/").content.decode()
    assert '<span class="input-waiting">2</span>' in page and '<span class="sink-uncommitted">1</span>' in page


def test_bob_does_not_see_alices_service_and_charlie_gets_404_on_every_url(client, personas) -> None:
    service = service_create(name="sd_async", owner=personas["alice"])
    token, _ = service_token_create(service=service)
    for name in ("bob", "charlie"):  # bob: her tenant, a plain member; charlie: tenant B
        client.force_login(personas[name])
        assert "sd_async" not in client.get("/services/").content.decode()
        for method, url in _urls(service, token):
            assert getattr(client, method)(url).status_code == 404, (name, method, url)
    token.refresh_from_db()
    assert EasService.objects.filter(pk=service.pk).exists() and token.revoked_at is None
    assert EasServiceToken.objects.filter(service=service).count() == 1


def test_a_tenant_admin_manages_a_members_service(client, personas) -> None:
    client.force_login(personas["bob"])
    refused = _create(client, owner="alice")  # a member creates services for themselves only
    assert refused.status_code == 400 and 'data-field="owner"' in refused.content.decode()
    assert _create(client, name="bobs.svc").status_code == 302
    bobs = EasService.objects.get(name="bobs.svc")
    assert bobs.owner == personas["bob"]

    client.force_login(personas["alice"])
    page = client.get("/services/").content.decode()
    assert "bobs.svc" in page and '<span class="service-owner">bob</span>' in page
    issued = client.post(f"/services/{bobs.public_id}/tokens/")
    assert issued.status_code == 200 and TOKEN.search(issued.content.decode())
    token = EasServiceToken.objects.get(service=bobs)
    assert token.name == "default"
    assert client.post(f"/services/{bobs.public_id}/tokens/{token.pk}/revoke/").status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None
    # ... creates one for bob (run as and billed to him) ...
    assert _create(client, name="for-bob", owner="bob").status_code == 302
    assert EasService.objects.get(name="for-bob").owner == personas["bob"]
    # ... and deletes bob's service after a confirmation page.
    confirm = client.get(f"/services/{bobs.public_id}/delete/")
    assert confirm.status_code == 200 and "bobs.svc" in confirm.content.decode()
    assert EasService.objects.filter(pk=bobs.pk).exists()  # the GET deletes nothing
    deleted = client.post(f"/services/{bobs.public_id}/delete/")
    assert deleted.status_code == 200 and "bobs.svc deleted" in deleted.content.decode()
    assert not EasService.objects.filter(pk=bobs.pk).exists()
    client.force_login(personas["charlie"])
    assert _create(client, name="charlies", owner="alice").status_code == 400  # not his tenant


def test_deleting_a_service_drops_its_items_and_cancels_its_jobs(client, personas, tiny_checkpoint_path) -> None:
    service = service_create(name="sd_async", owner=personas["alice"])
    for _ in range(3):
        queue_put(service=service, queue=INPUT, data=BODY)
    queue_put(service=service, queue=SINK, data=b"{}")
    eas_pump(service_id=service.pk)  # the input items become queued jobs (no worker runs them)
    jobs = list(Job.objects.filter(eas_items__service=service))
    assert len(jobs) == 3 and {job.status for job in jobs} == {Job.Status.QUEUED}
    client.force_login(personas["alice"])
    confirm = client.get(f"/services/{service.public_id}/delete/").content.decode()
    assert '<span id="delete-input-items">3</span>' in confirm and '<span id="delete-sink-items">1</span>' in confirm
    assert client.post(f"/services/{service.public_id}/delete/").status_code == 200
    assert not EasItem.objects.exists()
    assert set(Job.objects.filter(pk__in=[job.pk for job in jobs]).values_list("status", flat=True)) == {
        Job.Status.CANCELLED}


def test_bad_input_re_renders_the_form_naming_the_field(client, personas, tiny_checkpoint_path) -> None:
    service_create(name="sd_async", owner=personas["charlie"])  # names are global: the SDK's queue name
    client.force_login(personas["alice"])
    cases = [
        ({"name": "sd_async"}, "name"),  # taken
        ({"name": "bad name!"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "ok", "max_payload_bytes": "0"}, "max_payload_bytes"),
        ({"name": "ok", "max_payload_bytes": str(settings.ATELIER_EAS_MAX_PAYLOAD_BYTES + 1)}, "max_payload_bytes"),
        ({"name": "ok", "result_retention_hours": "a week"}, "result_retention_hours"),
        ({"name": "ok", "result_retention_hours": "100000"}, "result_retention_hours"),
        ({"name": "ok", "default_checkpoint": "no-such-model.safetensors"}, "default_checkpoint"),
        ({"name": "ok", "owner": "charlie"}, "owner"),
    ]
    for fields, field in cases:
        response = client.post("/services/", fields)
        page = response.content.decode()
        assert response.status_code == 400 and f'data-field="{field}"' in page, (fields, response.status_code)
        if fields["name"]:
            assert f'value="{fields["name"]}"' in page  # what was typed stays in the form
    assert list(EasService.objects.values_list("name", flat=True)) == ["sd_async"]
    service = service_create(name="alices", owner=personas["alice"])
    long_name = client.post(f"/services/{service.public_id}/tokens/", {"token_name": "x" * 101})
    assert long_name.status_code == 400 and 'data-field="token_name"' in long_name.content.decode()
    assert not EasServiceToken.objects.filter(service=service).exists()


def test_sign_in_csrf_and_api_tokens(client, personas, api) -> None:
    service = service_create(name="sd_async", owner=personas["alice"])
    anonymous = client.get("/services/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(settings.LOGIN_URL)
    assert client.get("/services/", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    # A member's API token works as for the API (a header no foreign page can send) ...
    assert api("alice").post(f"/services/{service.public_id}/tokens/").status_code == 200
    # ... while a browser session's POST needs the CSRF token.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["alice"])
    assert browser.post(f"/services/{service.public_id}/tokens/").status_code == 403
    assert browser.post("/services/", {"name": "other"}).status_code == 403
    assert EasServiceToken.objects.filter(service=service).count() == 1


def test_the_home_and_team_pages_link_the_services_page(client, personas) -> None:
    client.force_login(personas["bob"])
    assert 'href="/services/"' in client.get("/").content.decode()
    client.force_login(personas["alice"])
    assert 'href="/services/"' in client.get("/team/").content.decode()
