"""The registry is the surface: every served route is listed, every listed route is served, and
every test the registry and `ATTACKS` name exists (so deleting a security test fails here)."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.security.surface import (
    ADMIN_FAMILY,
    ATTACKS,
    ATTACKS_OUT_OF_SCOPE_REASONS,
    REGISTRY_FILE,
    ROUTES,
    Access,
    concrete_path,
    entry_for,
    enumerate_routes,
    missing_tests,
    split_test_id,
)


def test_every_served_route_is_in_the_registry() -> None:
    unlisted = [route for route in enumerate_routes() if entry_for(route) is None]
    assert not unlisted, "\n".join(
        f"new route {route.key} ({route.view}) has no auth/ownership test: add it to {REGISTRY_FILE} "
        "with the tests that prove it"
        for route in unlisted
    )


def test_every_registry_entry_is_a_served_route() -> None:
    served = {route.key for route in enumerate_routes()}
    switched_off = {key for key, entry in ROUTES.items()
                    if "served_when_setting" in entry.extra and not getattr(settings, entry.extra["served_when_setting"])}
    gone = sorted(set(ROUTES) - served - switched_off)
    assert not gone, f"{REGISTRY_FILE} lists routes that are no longer served (remove them): {gone}"


def test_the_enumeration_sees_every_kind_of_route() -> None:
    """A guard on the walker itself: an enumeration that found nothing would pass the checks above."""
    routes = enumerate_routes()
    keys = {route.key for route in routes}
    assert {"http /api/v1/jobs/<str:public_id>", "http /sdapi/v1/txt2img", "asgi /internal/events",
            "http /login/", "websocket /ws/jobs/<str:public_id>", "asgi /ui", "asgi /ui/<path>"} <= keys
    admin = [route for route in routes if route.family == "admin"]
    assert any(route.pattern == "/admin/inference/job/<path:object_id>/change/" for route in admin)
    assert len(keys) == len(routes), "two served routes share one registry key"


def test_every_route_names_at_least_one_test_and_every_named_test_exists() -> None:
    entries = {key: entry.tests for key, entry in ROUTES.items()} | {"admin family": ADMIN_FAMILY.tests}
    empty = [key for key, tests in entries.items() if not tests]
    assert not empty, f"routes without a test in {REGISTRY_FILE}: {empty}"
    missing = {key: missing_tests(tests) for key, tests in entries.items()}
    missing = {key: ids for key, ids in missing.items() if ids}
    assert not missing, f"{REGISTRY_FILE} names tests that do not exist: {missing}"


def test_every_attack_class_names_existing_tests_or_says_why_not() -> None:
    missing = {attack: missing_tests(tests) for attack, tests in ATTACKS.items() if tests is not None}
    missing = {attack: ids for attack, ids in missing.items() if ids}
    assert not missing, f"ATTACKS in {REGISTRY_FILE} names tests that do not exist: {missing}"
    out_of_scope = {attack for attack, tests in ATTACKS.items() if tests is None}
    assert out_of_scope == set(ATTACKS_OUT_OF_SCOPE_REASONS), "every None in ATTACKS needs a reason, and only those"
    assert all(tests for tests in ATTACKS.values() if tests is not None), "an attack class with an empty test list"
    assert len(out_of_scope) <= len(ATTACKS) // 4, "out-of-scope attack classes must stay the exception"


def test_owner_scoped_routes_name_an_object_and_internal_ones_a_method() -> None:
    for key, entry in ROUTES.items():
        if entry.access is Access.OWNER_SCOPED:
            assert "<" in key, f"{key} is owner-scoped but names no object in its path"
        assert set(entry.methods) <= {"GET", "POST", "PUT", "PATCH", "DELETE"}, key


@pytest.mark.parametrize(
    ("test_id", "expected"),
    [
        ("tests/a.py::test_x", ("tests/a.py", "test_x")),
        ("tests/a.py::test_x[charlie]", ("tests/a.py", "test_x")),
        ("tests/a.py::TestY::test_x", ("tests/a.py", "TestY::test_x")),
    ],
)
def test_test_ids_are_split_without_their_parameters(test_id: str, expected: tuple[str, str]) -> None:
    assert split_test_id(test_id) == expected


def test_a_deleted_or_misspelt_test_is_reported_missing() -> None:
    assert missing_tests(["tests/security/test_surface_registry.py::test_every_served_route_is_in_the_registry[x]"]) == []
    ghosts = ["tests/security/test_surface_registry.py::test_nothing_here", "tests/no_such_file.py::test_x"]
    assert missing_tests(ghosts) == ghosts


def test_concrete_paths_fill_converters_and_regex_groups() -> None:
    assert concrete_path("/api/v1/jobs/<str:public_id>/images/<int:index>", {"public_id": "j_1", "index": "0"}) == (
        "/api/v1/jobs/j_1/images/0"
    )
    assert concrete_path("/admin/^(?P<app_label>auth|tenants)/$", {}) == "/admin/auth/"
