"""The home page, the team page and the language switch."""

from __future__ import annotations

import pytest

from frontend.member_selectors import language_for_user
from frontend.workspace.ui import build_workspace
from tests.frontend.test_workspace_ui import args, finish, form

pytestmark = pytest.mark.django_db


def test_home_links_the_workspace_and_shows_own_images_and_usage(client, personas, tiny_checkpoint_path) -> None:
    alice = build_workspace(personas["alice"]).atelier_workspace
    job = finish(alice.txt2img.submit(*args(form())))
    image_url = f"/api/v1/jobs/{job.public_id}/images/0"

    client.force_login(personas["alice"])
    page = client.get("/").content.decode()
    assert 'href="/ui/"' in page and image_url in page
    assert 'id="usage-images">2<' in page and 'id="usage-gpu-seconds">0.5<' in page and 'id="usage-jobs">1<' in page
    assert client.get(image_url).status_code == 200  # the session cookie reads her own image

    client.force_login(personas["charlie"])
    page = client.get("/").content.decode()
    assert job.public_id not in page and 'id="usage-images">0<' in page
    assert client.get(image_url).status_code == 404


def test_administration_links_for_tenant_admins_and_operators_only(client, personas) -> None:
    client.force_login(personas["alice"])  # tenant admin
    page = client.get("/").content.decode()
    assert 'href="/team/"' in page and 'href="/admin/"' not in page
    client.force_login(personas["bob"])  # member
    page = client.get("/").content.decode()
    assert 'id="administration"' not in page and 'href="/team/"' not in page
    client.force_login(personas["admin"])  # operator
    page = client.get("/").content.decode()
    assert 'href="/admin/"' in page and "belong to no team" in page


def test_team_page_is_the_tenant_admins_own_team(client, personas, tiny_checkpoint_path) -> None:
    finish(build_workspace(personas["bob"]).atelier_workspace.txt2img.submit(*args(form())))
    client.force_login(personas["alice"])
    page = client.get("/team/").content.decode()
    assert "<td>bob</td><td>Member</td><td>2</td><td>0.5</td><td>1</td>" in page and "charlie" not in page
    client.force_login(personas["bob"])
    assert client.get("/team/").status_code == 404


def test_language_switch_from_the_home_page_reaches_the_workspace(client, personas) -> None:
    client.force_login(personas["bob"])
    response = client.post("/language/", {"language": "ja", "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert language_for_user(personas["bob"]) == "ja"
    page = client.get("/").content.decode()
    assert '<html lang="ja">' in page and "ワークスペースを開く" in page
    assert build_workspace(personas["bob"]).atelier_workspace.txt2img["generate"].value == "生成"
    client.post("/language/", {"language": "xx"})  # unknown: ignored
    assert language_for_user(personas["bob"]) == "ja"
    assert client.get("/language/").status_code == 405


@pytest.mark.parametrize("next_url", [";env;", "1'", "home", "//evil.example/", "javascript:alert(1)", "\\evil"])
def test_a_next_that_is_not_a_path_on_this_site_goes_home_not_to_a_500(client, personas, next_url) -> None:
    # Issue #23: a third-party scan found ";env;" and "1'" made `redirect()` reverse them as view names.
    client.force_login(personas["bob"])
    response = client.post("/language/", {"language": "ja", "next": next_url})
    assert response.status_code == 302 and response["Location"] == "/"


def test_operators_manage_extensions_in_admin_and_members_get_the_default(client, personas) -> None:
    from frontend.member_selectors import extension_enabled_for_user
    from frontend.member_services import extension_set_enabled
    from frontend.preferences import Extension

    client.force_login(personas["admin"])
    for path in ("/admin/frontend/extension/", "/admin/frontend/workspacepreferences/"):
        assert client.get(path).status_code == 200, path
    extension = Extension.objects.get(name="prompt-styles")
    page = client.get(f"/admin/frontend/extension/{extension.pk}/change/")
    assert page.status_code == 200 and b"enabled_by_default" in page.content

    assert not extension_enabled_for_user(personas["bob"], "prompt-styles")
    Extension.objects.filter(pk=extension.pk).update(enabled_by_default=True)  # what the admin form saves
    assert extension_enabled_for_user(personas["bob"], "prompt-styles")
    extension_set_enabled(user=personas["bob"], name="prompt-styles", enabled=False)  # his own choice wins
    assert not extension_enabled_for_user(personas["bob"], "prompt-styles")
    assert extension_enabled_for_user(personas["charlie"], "prompt-styles")

    # An extension with no shipped code is listed, but never "on".
    Extension.objects.create(name="not-shipped", title="Not shipped", enabled_by_default=True)
    assert not extension_enabled_for_user(personas["charlie"], "not-shipped")
    table = build_workspace(personas["charlie"]).atelier_workspace.extensions.extensions_markdown()
    assert "not-shipped" in table and "not available" in table


def test_the_favicon_is_served_and_the_workspace_links_the_api_docs(client, personas, settings) -> None:
    """Issue 20, bug 7: /favicon.ico was a 404; the workspace showed Gradio's own API instead of ours."""
    icon = client.get("/favicon.ico")
    assert icon.status_code == 301 and icon["Location"] == "/static/frontend/favicon.svg"
    from django.contrib.staticfiles import finders

    assert finders.find("frontend/favicon.svg")
    alice = build_workspace(personas["alice"]).atelier_workspace
    assert 'href="/docs"' in alice.header_html("studio-a")


def test_the_sliders_carry_this_deployments_limits_and_defaults_stay_within_them(personas, settings) -> None:
    """Issue 20, bug 6: the sliders went to 150 steps and 2048 px whatever the limits said."""
    from frontend.member_selectors import generation_defaults_for_user
    from frontend.member_services import generation_defaults_save

    settings.ATELIER_MAX_STEPS, settings.ATELIER_MAX_SIZE, settings.ATELIER_MAX_BATCH_SIZE = 30, 1024, 4
    generation_defaults_save(user=personas["alice"], values={"steps": 80, "width": 1536})
    assert (generation_defaults_for_user(personas["alice"])["steps"],
            generation_defaults_for_user(personas["alice"])["width"]) == (30, 1024)
    tab = build_workspace(personas["alice"]).atelier_workspace.txt2img
    assert (tab["steps"].maximum, tab["width"].maximum, tab["height"].maximum, tab["batch_size"].maximum) == (
        30, 1024, 1024, 4)
    assert tab["steps"].value == 30 and tab["width"].value == 1024
