"""Property-based tests of the HTML forms (issue 23): whatever a browser or a scanner posts,
the answer is a page or a redirect, never a 5xx.

Hypothesis draws the fields (any text: control characters, NUL, right-to-left marks, very long
strings, values that look like paths, URLs or view names) for the sign-in form, the language
switch, the tokens and services forms, the Team pages' forms, and every Django admin changelist action, posted by the
people who may post them. Deterministic (`derandomize`) and bounded, so CI repeats itself; the
database is the real one of the run (PostgreSQL in the cluster pass, which refuses NUL bytes
that SQLite stores).
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db

FORM_SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "/", "//evil.example", ";env;", "1'", "\x00", "../../etc/passwd", "http://x/", "%00",
                     "javascript:alert(1)", "\u202e", "a" * 5000, "admin:index", "/admin/"]),
)


def _no_server_error(response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code}"


@FORM_SETTINGS
@given(username=text, password=text, next_url=text)
def test_the_sign_in_form_never_fails(personas, username: str, password: str, next_url: str) -> None:
    client = Client()
    response = client.post("/login/", {"username": username, "password": password, "next": next_url})
    _no_server_error(response, "POST /login/")
    if response.status_code == 302:  # never off the site
        assert response["Location"].startswith("/") and not response["Location"].startswith("//")


@FORM_SETTINGS
@given(language=text, next_url=text)
def test_the_language_switch_never_fails_and_stays_on_the_site(personas, language: str, next_url: str) -> None:
    client = Client()
    client.force_login(personas["bob"])
    response = client.post("/language/", {"language": language, "next": next_url})
    _no_server_error(response, "POST /language/")
    if "\x00" in language + next_url:  # RefuseNulCharactersMiddleware (config/security.py)
        assert response.status_code == 400 and b"NUL" in response.content
        return
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/") and not location.startswith("//"), location


def test_a_nul_in_a_form_is_a_400_that_says_so_on_any_database(personas) -> None:
    """Found by the test above on PostgreSQL: a token named with a NUL was a 500 there."""
    client = Client()
    client.force_login(personas["alice"])
    for post in ({"name": "laptop\x00"}, {"name\x00": "x"}):
        response = client.post("/tokens/", post)
        assert response.status_code == 400 and b"NUL characters" in response.content
    assert client.get("/tokens/?q=%00").status_code == 400
    assert client.post("/tokens/", {"name": "laptop"}).status_code == 200


@FORM_SETTINGS
@given(name=text, extra=text)
def test_the_tokens_and_services_forms_never_fail(personas, name: str, extra: str) -> None:
    client = Client()
    client.force_login(personas["alice"])
    _no_server_error(client.post("/tokens/", {"name": name}), "POST /tokens/")
    response = client.post("/services/", {"name": name, "owner": extra, "checkpoint": extra,
                                          "max_queue_length": extra, "max_payload_bytes": extra})
    _no_server_error(response, "POST /services/")


@FORM_SETTINGS
@given(name=text, extra=text, number=st.one_of(text, st.sampled_from(["1e400", "nan", "-0", "1e18", "0.5", "inf"])))
def test_the_team_admin_forms_never_fail(personas, name: str, extra: str, number: str) -> None:
    """A tenant admin's forms (frontend/team_views.py) and the public invitation form."""
    client = Client()
    client.force_login(personas["alice"])
    posts = (
        ("/team/", {"username": name, "email": extra, "role": extra, "password": name, "access": extra}),
        ("/team/members/bob/", {"role": extra, "max_steps": number, "user_gpu_seconds_per_day": number,
                                "max_pixels": extra}),
        ("/team/tokens/", {"member": extra, "name": name}),
        ("/team/tokens/", {"member": "bob", "name": name}),
        ("/team/rules/", {"member": extra, "role": name, "kind": extra, "pattern": name, "effect": extra}),
        ("/team/rules/", {"role": "member", "kind": "lora", "pattern": name, "effect": "deny"}),
    )
    for path, post in posts:
        _no_server_error(client.post(path, post), f"POST {path}")
    invite = f"/invite/{name.replace('/', '')}/"
    _no_server_error(Client().post(invite, {"password": name, "password_again": name}), f"POST {invite!r}")


def _changelists() -> list[str]:
    return sorted(
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for model, model_admin in admin.site._registry.items()
    )


@pytest.mark.parametrize("changelist", _changelists())
def test_admin_changelist_actions_never_fail(personas, changelist: str) -> None:
    client = Client()
    client.force_login(personas["admin"])

    @settings(FORM_SETTINGS, max_examples=12)  # × every changelist: the sweep stays within CI's budget
    @given(action=st.one_of(text, st.sampled_from(["delete_selected", ""])), selected=st.lists(text, max_size=3),
           query=text)
    def post_action(action: str, selected: list[str], query: str) -> None:
        response = client.post(changelist, {"action": action, "_selected_action": selected, "index": "0",
                                            "select_across": query})
        _no_server_error(response, f"POST {changelist} action={action!r}")
        _no_server_error(client.get(changelist, {"q": query}), f"GET {changelist}?q=")

    post_action()
