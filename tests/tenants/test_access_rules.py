"""Model access rules (`tenants/access.py`) and the plan's allowed checkpoints, as members meet them:
denied checkpoints and LoRAs are not listed (/sdapi/v1/sd-models, /sdapi/v1/loras, /api/v1/models,
the registry the workspace reads), and naming one is a 403 that says who denied it; another
team's rules never touch charlie; the rule order; the registry's fast path."""

from __future__ import annotations

from tests.safetensors_files import write_placeholder_model
import shutil

import pytest
from django.conf import settings
from django.utils import timezone

from inference.model_registry import checkpoint_resolve_for_user, model_list_for_user
from tenants.access import ModelAccess, ModelDenied, Rule, model_access_for, model_allowed
from tenants.models import Membership, ModelAccessRule, Plan, TenantPlan
from tenants.workdirs import tenant_model_dir

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_models(personas, tiny_checkpoint_path):
    """studio-a's shared folder: checkpoint `sdxl-anime` (another hash than the public tiny one) and
    LoRAs `styles/ink` and `pastel`."""
    checkpoint = tenant_model_dir("studio-a", "Stable-diffusion") / "sdxl-anime.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_checkpoint_path, checkpoint)
    with checkpoint.open("ab") as handle:
        handle.write(b"\0")
    loras = [tenant_model_dir("studio-a", "Lora") / "styles" / "ink.safetensors",
             tenant_model_dir("studio-a", "Lora") / "pastel.safetensors"]
    for index, path in enumerate(loras):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_placeholder_model(path, f"lora {index}")
    yield checkpoint, loras
    checkpoint.unlink()
    for path in loras:
        path.unlink()


def _rule(personas, *, kind: str, pattern: str, effect: str, user: str | None = None, role: str = "") -> None:
    tenant = personas["alice"].membership.tenant
    ModelAccessRule.objects.create(tenant=tenant, user=personas[user] if user else None, role=role, kind=kind,
                                   pattern=pattern, effect=effect)


TINY = settings.ATELIER_TINY_MODEL_NAME.rsplit(".", 1)[0]


def test_the_rule_order_own_rules_first_deny_before_allow_then_the_plan_bounds_checkpoints() -> None:
    access = ModelAccess(
        own_rules=(Rule("checkpoint", "sdxl-*", "allow"), Rule("checkpoint", "sdxl-nsfw*", "deny")),
        role_rules=(Rule("checkpoint", "sdxl-*", "deny"), Rule("lora", "*", "deny"), Rule("checkpoint", "sd15-*", "deny")),
    )
    assert access.allows("checkpoint", "SDXL-Anime.safetensors")  # own allow beats the role's deny; any case
    assert not access.allows("checkpoint", "sdxl-nsfw-1.safetensors")  # own deny before own allow
    assert not access.allows("checkpoint", "sd15-base")  # the role's deny
    assert not access.allows("lora", "styles/ink.safetensors")
    assert access.allows("checkpoint", "other.safetensors")  # nothing matches: allowed
    planned = ModelAccess(own_rules=(Rule("checkpoint", "*", "allow"),), allowed_checkpoints=("sd15-*",))
    assert planned.allows("checkpoint", "sd15-base.safetensors")
    assert not planned.allows("checkpoint", "sdxl-anime.safetensors")  # an admin's allow cannot pass the plan
    assert planned.allows("lora", "anything")  # the plan bounds checkpoints only
    assert "plan" in planned.refusal("checkpoint", "sdxl-anime")
    assert "admin" in access.refusal("lora", "ink")
    stem = ModelAccess(own_rules=(Rule("lora", "ink", "deny"),))
    assert not stem.allows("lora", "styles/ink.safetensors")  # by its stem in a subfolder


def test_denied_models_are_not_listed_and_naming_one_is_a_403(api, personas, team_models) -> None:
    _rule(personas, kind="checkpoint", pattern="sdxl-*", effect="deny", role=Membership.Role.MEMBER)
    _rule(personas, kind="lora", pattern="ink", effect="deny", user="bob")
    bobs = [m["model_name"] for m in api("bob").get("/sdapi/v1/sd-models").json()]
    alices = [m["model_name"] for m in api("alice").get("/sdapi/v1/sd-models").json()]
    assert bobs == [TINY] and alices == ["sdxl-anime", TINY]  # alice is an admin: the member role's rule is not hers
    assert [m["name"] for m in api("bob").get("/sdapi/v1/loras").json()] == ["pastel"]
    assert sorted(m["name"] for m in api("alice").get("/sdapi/v1/loras").json()) == ["pastel", "styles/ink"]
    assert [m["model_name"] for m in api("bob").get("/api/v1/models").json()["models"]] == [TINY]
    body = {"prompt": "x", "steps": 2, "width": 64, "height": 64}
    denied = api("bob").post("/sdapi/v1/txt2img", {**body, "override_settings": {"sd_model_checkpoint": "sdxl-anime"}})
    assert denied.status_code == 403 and denied.json()["error"] == "PermissionDenied"
    assert "your team's admin has not allowed the checkpoint" in denied.json()["detail"]
    native = api("bob").post("/api/v1/jobs", {**body, "prompt": "a <lora:ink:0.8> boat"})
    assert native.status_code == 403 and native.json()["field"] == "prompt" and "lora" in native.json()["error"]
    assert api("bob").post("/api/v1/jobs", {**body, "prompt": "a <lora:pastel:0.8> boat"}).status_code == 201
    assert api("alice").post("/api/v1/jobs", {**body, "override_settings": {"sd_model_checkpoint": "sdxl-anime"}}
                             ).status_code == 201
    # another team's rules never reach charlie (who cannot see studio-a's models at all: a 404 as before)
    assert [m["model_name"] for m in api("charlie").get("/sdapi/v1/sd-models").json()] == [TINY]
    unknown = api("charlie").post("/sdapi/v1/txt2img", {**body, "override_settings": {"sd_model_checkpoint": "sdxl-anime"}})
    assert unknown.status_code == 404


def test_the_plan_s_allowed_checkpoints_bound_lists_defaults_and_requests(personas, team_models) -> None:
    tenant = personas["alice"].membership.tenant
    plan = Plan.objects.create(slug="anime-only", name="Anime only", allowed_checkpoints=["sdxl-*"])
    TenantPlan.objects.create(tenant=tenant, plan=plan, effective_from=timezone.now())
    alice = personas["alice"]
    assert [e.model_name for e in model_list_for_user(alice)] == ["sdxl-anime"]
    assert checkpoint_resolve_for_user(alice, None).model_name == "sdxl-anime"  # the default: one she may use
    with pytest.raises(ModelDenied, match="not in your team's plan"):
        checkpoint_resolve_for_user(alice, TINY)
    assert model_allowed(alice, "checkpoint", "sdxl-anime") and not model_allowed(alice, "checkpoint", TINY)
    assert model_allowed(personas["charlie"], "checkpoint", TINY)


def test_the_registry_reads_the_rules_in_one_query_when_the_team_has_none(
    personas, django_assert_num_queries, team_models,
) -> None:
    bob, tenant = personas["bob"], personas["bob"].membership.tenant
    with django_assert_num_queries(1):
        assert model_access_for(bob, tenant).unrestricted
    _rule(personas, kind="lora", pattern="ink", effect="deny", role=Membership.Role.MEMBER)
    with django_assert_num_queries(2):
        access = model_access_for(bob, tenant)
    assert access.role_rules == (Rule("lora", "ink", "deny"),) and not access.own_rules
