"""Who may read a job (`inference.selectors.job_get_for_user`, behind every `/api/v1/jobs/<id>`
route and the job websocket): its owner, its tenant's admin, operators; nobody else, whatever
the order the rule is checked in. The sweep in test_surface_http.py covers every route for the
outsiders; this covers the ones who may, and the lookup itself for each persona."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from inference.selectors import job_get_for_user

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a kite", "steps": 2, "width": 64, "height": 64}


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


def test_a_job_is_its_owner_s_its_tenant_admin_s_and_operators_and_nobody_else_s(api, personas, outsiders) -> None:
    bobs = api("bob").post("/api/v1/jobs", BODY).json()["id"]  # bob: a member of studio-a, alice its admin
    alices = api("alice").post("/api/v1/jobs", BODY).json()["id"]
    may = {bobs: ("bob", "alice", "admin"), alices: ("alice", "admin")}
    everyone = {**personas, "dana": outsiders["dana"]}
    for job_id, readers in may.items():
        for name, user in everyone.items():
            job = job_get_for_user(user, job_id)
            assert (job is not None and job.public_id == job_id) == (name in readers), (name, job_id)
        assert job_get_for_user(AnonymousUser(), job_id) is None
    assert api("alice").get(f"/api/v1/jobs/{bobs}").json()["id"] == bobs  # the admin, over HTTP
    assert api("bob").get(f"/api/v1/jobs/{alices}").status_code == 404
    assert api("charlie").get(f"/api/v1/jobs/{bobs}").status_code == 404
    assert job_get_for_user(personas["alice"], "no-such-job") is None
