"""Who sees whose usage: `/api/v1/usage/records`, `/api/v1/usage/statement` and the bill page
`/team/bill/`. Members see their own records only; tenant admins their tenant's; operators any
tenant's. Asking for someone else's is a 404, by token and by session, the same answer as for a
tenant or member that does not exist; a malformed month is a 400 that says the format."""

from __future__ import annotations

import json

import pytest

from tests.tenants.usage_helpers import at, job_record, november_of_studio_a

pytestmark = pytest.mark.django_db

RECORDS, STATEMENT = "/api/v1/usage/records", "/api/v1/usage/statement"
BILL_PAGES = ("/team/bill/?month=2026-11", "/team/bill/?month=2026-11&tenant=studio-a")


@pytest.fixture
def usage(personas):
    data = november_of_studio_a(personas)
    data["charlies"] = job_record(personas["charlie"], ended=at("2026-11-05 10:00"), gpu_seconds=12, images=1)
    return data


@pytest.fixture(params=["token", "session"])
def caller(request, client, tokens, personas):
    """`caller("bob").get(path)`: by bearer token, then (a second run) by the session cookie."""

    def make(name: str):
        if request.param == "session":
            client.force_login(personas[name])

            class Session:
                @staticmethod
                def get(path: str):
                    return client.get(path)

            return Session
        headers = {"HTTP_AUTHORIZATION": f"Bearer {tokens[name]}"}

        class Token:
            @staticmethod
            def get(path: str):
                if path.startswith("/team/"):  # a browser page: a token is no sign-in, so sign in for it
                    client.force_login(personas[name])
                    try:
                        return client.get(path)
                    finally:
                        client.logout()
                return client.get(path, **headers)

        return Token

    return make


def _records(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return json.loads(b"".join(response.streaming_content))["records"]


def test_bob_and_charlie_get_404_for_alices_usage_and_studio_as_statement(caller, usage) -> None:
    bob = caller("bob")
    assert {row["user"] for row in _records(bob.get(f"{RECORDS}?month=2026-11"))} == {"bob"}
    assert {row["user"] for row in _records(bob.get(f"{RECORDS}?month=2026-11&user=bob&tenant=studio-a"))} == {"bob"}
    for path in (f"{RECORDS}?month=2026-11&user=alice", f"{RECORDS}?month=2026-11&tenant=studio-b",
                 f"{RECORDS}?month=2026-11&user=charlie", f"{STATEMENT}?month=2026-11",
                 f"{STATEMENT}?month=2026-11&tenant=studio-a", *BILL_PAGES):
        response = bob.get(path)
        assert response.status_code == 404, path
        assert b"records" not in response.content and b"21.90" not in response.content

    charlie = caller("charlie")
    assert [row["record_id"] for row in _records(charlie.get(f"{RECORDS}?month=2026-11"))] == [usage["charlies"].pk]
    for path in (f"{RECORDS}?month=2026-11&user=alice", f"{RECORDS}?month=2026-11&tenant=studio-a",
                 f"{RECORDS}?month=2026-11&tenant=studio-a&user=alice", f"{STATEMENT}?month=2026-11&tenant=studio-a",
                 f"{STATEMENT}?month=2026-11", *BILL_PAGES):
        assert charlie.get(path).status_code == 404, path


def test_a_tenant_admin_sees_her_tenant_and_its_members_and_nothing_else(caller, usage) -> None:
    alice = caller("alice")
    assert {row["user"] for row in _records(alice.get(f"{RECORDS}?month=2026-11"))} == {"alice", "bob"}
    assert {row["user"] for row in _records(alice.get(f"{RECORDS}?month=2026-11&user=bob"))} == {"bob"}
    statement = alice.get(f"{STATEMENT}?month=2026-11")
    assert statement.status_code == 200 and json.loads(statement.content)["total"] == "21.90"
    assert alice.get("/team/bill/?month=2026-11").status_code == 200
    for path in (f"{RECORDS}?month=2026-11&tenant=studio-b", f"{RECORDS}?month=2026-11&user=charlie",
                 f"{RECORDS}?month=2026-11&user=nobody", f"{STATEMENT}?month=2026-11&tenant=studio-b",
                 f"{STATEMENT}?month=2026-11&tenant=nowhere", "/team/bill/?month=2026-11&tenant=studio-b"):
        assert alice.get(path).status_code == 404, path


def test_operators_see_any_tenant_and_must_name_the_statements(caller, usage) -> None:
    operator = caller("admin")
    everyone = _records(operator.get(f"{RECORDS}?month=2026-11"))
    assert {row["tenant"] for row in everyone} == {"studio-a", "studio-b"}
    assert json.loads(operator.get(f"{STATEMENT}?month=2026-11&tenant=studio-b").content)["tenant"] == "studio-b"
    missing = operator.get(f"{STATEMENT}?month=2026-11")
    assert missing.status_code == 400 and missing.json()["field"] == "tenant"
    assert operator.get(f"{STATEMENT}?month=2026-11&tenant=nowhere").status_code == 404
    assert operator.get(f"{RECORDS}?month=2026-11&user=nobody").status_code == 404
    assert operator.get("/team/bill/?month=2026-11&tenant=studio-a").status_code == 200


@pytest.mark.parametrize("query", ["", "month=2026-13", "month=-2026-11", "month=26-11", "month=2026-11-01",
                                   "month=%00", "month=2026-00", "from=2026-11-01", "from=2026-11-09&to=2026-11-01",
                                   "from=x&to=y", "month=2026-11&from=2026-11-01&to=2026-11-02"])
def test_a_malformed_period_is_a_400_that_says_the_format(api, personas, query) -> None:
    for path in (f"{RECORDS}?{query}", f"{STATEMENT}?{query}"):
        response = api("alice").get(path)
        assert response.status_code == 400, path
        assert response.json()["field"] == "month"
        assert any(words in response.json()["error"] for words in ("YYYY-MM", "after", "not both")), path


def test_bad_format_names_and_anonymous_callers(api, client, personas) -> None:
    assert api("alice").get(f"{RECORDS}?month=2026-11&format=xml").json()["field"] == "format"
    assert api("alice").get(f"{RECORDS}?month=2026-11&tenant=%00").status_code == 404
    assert api("alice").get(f"{RECORDS}?month=2026-11&user={'x' * 500}").status_code == 404
    for path in (f"{RECORDS}?month=2026-11", f"{STATEMENT}?month=2026-11"):
        assert api(None).get(path).status_code == 401
        assert client.post(path).status_code in (401, 405)
    bill = client.get("/team/bill/")
    assert bill.status_code == 302 and bill["Location"].startswith("/login/")


def test_the_bill_page_defaults_to_this_month_and_explains_a_bad_month(client, personas) -> None:
    client.force_login(personas["alice"])
    page = client.get("/team/bill/")
    assert page.status_code == 200 and 'id="month"' in page.content.decode()
    bad = client.get("/team/bill/?month=2026-13")
    assert bad.status_code == 400 and "YYYY-MM" in bad.content.decode()
