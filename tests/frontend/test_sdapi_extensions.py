"""`GET /sdapi/v1/extensions`: the installed extensions in A1111's shape, each member's own switch."""

from __future__ import annotations

import pytest

from frontend.member_services import extension_set_enabled
from frontend.preferences import Extension

pytestmark = pytest.mark.django_db

A1111_KEYS = {"name", "remote", "branch", "commit_hash", "version", "commit_date", "enabled"}


def test_the_migrations_install_beautiful_prompt_off_by_default() -> None:
    extension = Extension.objects.get(name="beautiful-prompt")
    assert extension.title == "BeautifulPrompt" and not extension.enabled_by_default


def test_extensions_are_listed_in_a1111s_shape_with_the_callers_own_switch(api, personas) -> None:
    extension_set_enabled(user=personas["alice"], name="beautiful-prompt", enabled=True)
    alice = {e["name"]: e for e in api("alice").get("/sdapi/v1/extensions").json()}
    bob = {e["name"]: e for e in api("bob").get("/sdapi/v1/extensions").json()}
    assert {"prompt-styles", "beautiful-prompt"} <= set(alice)
    assert all(set(entry) == A1111_KEYS for entry in alice.values())
    assert isinstance(alice["beautiful-prompt"]["commit_date"], int)
    assert alice["beautiful-prompt"]["enabled"] is True and bob["beautiful-prompt"]["enabled"] is False
    assert alice["prompt-styles"]["enabled"] is False


def test_an_extension_without_code_here_is_listed_but_never_enabled(api, personas) -> None:
    Extension.objects.create(name="sd-webui-unknown", title="Unknown", enabled_by_default=True)
    listed = {e["name"]: e for e in api("alice").get("/sdapi/v1/extensions").json()}
    assert listed["sd-webui-unknown"]["enabled"] is False


def test_anonymous_callers_are_refused(client) -> None:
    assert client.get("/sdapi/v1/extensions").status_code == 401
