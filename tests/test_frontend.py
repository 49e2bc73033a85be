"""Sign-in and the home page."""

import pytest

pytestmark = pytest.mark.django_db


def test_home_requires_sign_in_and_shows_the_members_team_and_models(client, personas, tiny_checkpoint_path) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = client.post("/login/", {"username": "bob", "password": "pw-bob"})
    assert response.status_code == 302
    page = client.get("/").content.decode()
    assert "studio-a" in page.lower() and "atelier-tiny.safetensors [" in page
    assert 'id="usage-images">0<' in page and 'id="usage-gpu-seconds">0.0<' in page


def test_wrong_password_shows_an_error(client, personas) -> None:
    page = client.post("/login/", {"username": "bob", "password": "nope"}).content.decode()
    assert "didn't match" in page


def test_admin_is_for_operators(client, personas) -> None:
    client.force_login(personas["alice"])
    assert client.get("/admin/").status_code == 302
    client.force_login(personas["admin"])
    for path in ("/admin/", "/admin/inference/job/", "/admin/inference/worker/", "/admin/tenants/tenant/",
                 "/admin/tenants/apitoken/"):
        assert client.get(path).status_code == 200, path
