"""Behavioural sweeps over every HTTP route of `config.urls`, through Django's test client on the
real URLconf and database: anonymous callers, outsiders to alice's objects and members on operator
routes. (The workers' `/internal/events` is served before Django: tests/security/test_surface_asgi.py.)

The routes come from `enumerate_routes()`, so a route added tomorrow is swept without anyone
editing this file; its class comes from the registry in `surface.py`.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client
from django.urls import resolve

from inference.models import Job
from tests.security.conftest import AlicesThings
from tests.security.surface import Access, Entry, Route, concrete_path, entry_for, enumerate_routes

pytestmark = pytest.mark.django_db

REFUSALS = {401, 403, 404, 405}
NO_SUCH_JOB = "j_NoSuchJob000000"

# Holes the sweep found and that are not fixed yet: route key → reason (xfail, strict: it flips
# to a failure the day the hole is closed, so the entry is removed then).
KNOWN_HOLES: dict[str, str] = {}


def _routes(*accesses: Access) -> list:
    """pytest params for the HTTP routes whose registry class is one of `accesses`."""
    params = []
    for route in enumerate_routes():
        entry = entry_for(route)
        if route.protocol != "http" or entry is None or entry.access not in accesses:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_HOLES[route.key])] if route.key in KNOWN_HOLES else []
        params.append(pytest.param(route, entry, id=route.key.removeprefix("http "), marks=marks))
    return params


def _path(route: Route, things: AlicesThings) -> str:
    """A real URL for the route, checked to resolve to that same route."""
    path = concrete_path(route.pattern, things.values)
    match = resolve(path)
    served = "/" + match.route  # Django drops an included regex's `^` when it joins the prefixes
    assert served == route.pattern.replace("^", ""), f"{path} resolves to {served}, not {route.pattern}"
    return path


def _call(client: Client, method: str, path: str, token: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if method == "GET":
        return client.get(path, **headers)
    return client.generic(method, path, data="{}", content_type="application/json", **headers)


def _refused(response, login_urls: tuple[str, ...]) -> bool:
    """A refusal that hands out nothing: 401/403/404/405, or a redirect to a sign-in page."""
    if response.status_code in REFUSALS:
        return True
    return response.status_code == 302 and response["Location"].split("?")[0] in login_urls


def _describe(method: str, path: str, response) -> str:
    location = f" → {response['Location']}" if response.has_header("Location") else ""
    return f"{method} {path}: {response.status_code}{location}"


# --- anonymous ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("route", "entry"), _routes(Access.AUTHENTICATED, Access.OWNER_SCOPED, Access.OPERATOR,
                                                     Access.INTERNAL))
def test_anonymous_callers_never_get_a_2xx(client, alices_things, login_urls, route: Route, entry: Entry) -> None:
    path = _path(route, alices_things)
    for method in ("GET", "POST"):
        response = _call(client, method, path)
        assert _refused(response, login_urls), f"anonymous {_describe(method, path, response)}"
    assert Job.objects.get(public_id=alices_things.job_id).status == "queued"


@pytest.mark.parametrize(("route", "entry"), _routes(Access.PUBLIC))
def test_public_routes_answer_anonymous_callers(client, alices_things, route: Route, entry: Entry) -> None:
    """Public routes work without credentials (and do not fail on them)."""
    path = _path(route, alices_things)
    for method in ("GET", "POST"):
        response = _call(client, method, path)
        assert response.status_code < 500, _describe(method, path, response)
        assert alices_things.job_id.encode() not in response.content


# --- outsiders and alice's objects -----------------------------------------------------------------

@pytest.mark.parametrize(("route", "entry"), _routes(Access.OWNER_SCOPED))
def test_outsiders_get_404_for_alices_objects(
    client, all_tokens, outsiders, alices_things, route: Route, entry: Entry
) -> None:
    """bob (alice's tenant), charlie (tenant B) and dana (tenant B's admin) get 404 on every method
    the route serves, with a token and with a session cookie; never a 403 that says it exists."""
    path = _path(route, alices_things)
    nowhere = _path(route, AlicesThings(job_id=NO_SUCH_JOB, values={**alices_things.values, "public_id": NO_SUCH_JOB}))
    for name, user in outsiders.items():
        for method in ("GET", "POST"):
            expected = {404} if method in entry.methods else {404, 405}
            response = _call(client, method, path, all_tokens[name])
            assert response.status_code in expected, f"{name} (token): {_describe(method, path, response)}"
            # No existence oracle: alice's job answers exactly as a job that does not exist.
            absent = _call(client, method, nowhere, all_tokens[name])
            assert (response.status_code, response.content.replace(alices_things.job_id.encode(), b"?")) == (
                absent.status_code, absent.content.replace(NO_SUCH_JOB.encode(), b"?")
            ), f"{name}: {method} {path} answers unlike a job that does not exist"
        client.force_login(user)
        for method in entry.methods:
            if method == "GET":  # a session cookie may read; writes need a token
                response = _call(client, method, path)
                assert response.status_code == 404, f"{name} (session): {_describe(method, path, response)}"
        client.logout()
    job = Job.objects.get(public_id=alices_things.job_id)
    assert job.status == "queued" and not job.cancel_requested


@pytest.mark.parametrize(("route", "entry"), _routes(Access.OWNER_SCOPED))
def test_the_owner_reaches_her_own_objects(api, alices_things, route: Route, entry: Entry) -> None:
    """The positive control: the same URL answers alice, so the 404s above are about ownership."""
    path = _path(route, alices_things)
    for method in entry.methods:
        response = api("alice").get(path) if method == "GET" else api("alice").post(path)
        assert response.status_code == 200, _describe(method, path, response)


# --- operators ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("route", "entry"), _routes(Access.OPERATOR))
def test_members_never_get_a_2xx_from_operator_routes(
    client, tokens, personas, alices_things, login_urls, route: Route, entry: Entry
) -> None:
    """alice (a tenant admin, not staff) and charlie: token or session, GET or POST."""
    path = _path(route, alices_things)
    for name in ("alice", "charlie"):
        for method in ("GET", "POST"):
            response = _call(client, method, path, tokens[name])
            assert _refused(response, login_urls), f"{name} (token): {_describe(method, path, response)}"
        client.force_login(personas[name])
        for method in ("GET", "POST"):
            response = _call(client, method, path)
            assert _refused(response, login_urls), f"{name} (session): {_describe(method, path, response)}"
        client.logout()


# --- what authenticated routes hand out ------------------------------------------------------------

def test_cmd_flags_dumps_no_configuration(api) -> None:
    """A1111 #17411: /sdapi/v1/cmd-flags leaked every argparse value, the Gradio password included."""
    body = api("alice").get("/sdapi/v1/cmd-flags").content.decode()
    for secret in (settings.SECRET_KEY, str(settings.DATA_DIR)):
        assert secret not in body
    assert json.loads(body)["gradio_auth"] is None and json.loads(body)["api_auth"] is None


def test_job_json_names_no_server_paths(api, alices_things) -> None:
    for path in (f"/api/v1/jobs/{alices_things.job_id}", "/api/v1/jobs", "/sdapi/v1/progress"):
        assert str(settings.DATA_DIR) not in api("alice").get(path).content.decode(), path


def test_redirects_stay_on_this_site(client, personas) -> None:
    """Sign-in and the language switch follow `next` only to this site (open redirect)."""
    evil = "https://evil.example/phish"
    response = client.post(f"/login/?next={evil}", {"username": "bob", "password": "pw-bob"})
    assert response.status_code == 302 and response["Location"] == settings.LOGIN_REDIRECT_URL
    for next_url in (evil, "//evil.example/x", "/\\evil.example"):
        response = client.post("/language/", {"language": "en", "next": next_url})
        assert response.status_code == 302 and response["Location"] == "/", next_url
