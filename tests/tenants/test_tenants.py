"""Tenants, members, tokens, working directories and the model registry."""

from __future__ import annotations

import json
import shutil

import pytest
from django.conf import settings
from django.core.management import call_command

from inference.model_registry import ModelNotFound, checkpoint_resolve_for_user, model_list_for_user
from tenants.models import ApiToken, Membership, Tenant
from tenants.selectors import token_user
from tenants.services import member_create, tenant_create, token_create, token_revoke

pytestmark = pytest.mark.django_db


def test_creating_a_member_creates_their_working_directory(personas) -> None:
    home = settings.DATA_DIR / "users" / "bob"
    for kind in ("Stable-diffusion", "Lora", "VAE", "embeddings", "hypernetworks", "ControlNet"):
        assert (home / "models" / kind).is_dir()
        assert (settings.DATA_DIR / "tenants" / "studio-a" / "models" / kind).is_dir()
    assert (home / "outputs").is_dir()


@pytest.mark.parametrize("name", ["..", "a/b", "", "../etc", "x" * 200])
def test_usernames_that_are_not_folder_names_are_refused(name) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        member_create(tenant=tenant_create(slug="t"), username=name, password="pw")


def test_tokens_are_stored_hashed_shown_once_several_per_user_and_revocable(personas) -> None:
    alice = personas["alice"]
    first, raw1 = token_create(user=alice, name="laptop")
    second, raw2 = token_create(user=alice, name="ci")
    stored = json.dumps(list(ApiToken.objects.values()), default=str)
    assert raw1 not in stored and raw2 not in stored
    assert token_user(raw1) == alice and token_user(raw2) == alice
    token_revoke(token=first)
    assert token_user(raw1) is None and token_user(raw2) == alice
    assert token_user("") is None and token_user("atl_guess") is None


def test_bootstrap_demo_is_idempotent_and_prints_working_tokens(capsys) -> None:
    for _ in range(2):
        call_command("bootstrap_demo", "--json")
        credentials = json.loads(capsys.readouterr().out)
    assert set(credentials) == {"alice", "bob", "charlie", "admin"}
    assert list(Tenant.objects.values_list("slug", flat=True)) == ["studio-a", "studio-b"]
    roles = dict(Membership.objects.values_list("user__username", "role"))
    assert roles == {"alice": "admin", "bob": "member", "charlie": "member"}
    assert token_user(credentials["charlie"]["token"]).username == "charlie"
    assert ApiToken.objects.filter(name="demo", revoked_at__isnull=True).count() == 4
    from django.contrib.auth import authenticate

    assert authenticate(username="alice", password=credentials["alice"]["password"]) is not None
    assert authenticate(username="admin", password=credentials["admin"]["password"]).is_staff


def test_create_token_command(personas, capsys) -> None:
    call_command("create_token", "bob")
    assert token_user(capsys.readouterr().out.strip()) == personas["bob"]


def test_registry_lists_own_tenant_and_public_checkpoints_with_a1111_titles(personas, tiny_checkpoint_path) -> None:
    alice_dir = settings.DATA_DIR / "users" / "alice" / "models" / "Stable-diffusion"
    team_dir = settings.DATA_DIR / "tenants" / "studio-a" / "models" / "Stable-diffusion" / "styles"
    team_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_checkpoint_path, alice_dir / "mine.safetensors")
    shutil.copy(tiny_checkpoint_path, team_dir / "team.safetensors")
    (alice_dir / "ignored.ckpt").write_bytes(b"pickle")
    try:
        alice = [(e.name, e.scope) for e in model_list_for_user(personas["alice"])]
        assert alice == [("mine.safetensors", "user"), ("styles/team.safetensors", "tenant"),
                         ("atelier-tiny.safetensors", "public")]
        bob = [e.name for e in model_list_for_user(personas["bob"])]
        assert bob == ["styles/team.safetensors", "atelier-tiny.safetensors"]
        charlie = [e.name for e in model_list_for_user(personas["charlie"])]
        assert charlie == ["atelier-tiny.safetensors"]

        entry = checkpoint_resolve_for_user(personas["alice"], "atelier-tiny.safetensors")
        assert entry.title == f"atelier-tiny.safetensors [{entry.sha256[:10]}]"
        for ident in (entry.title, "atelier-tiny", entry.hash10, entry.sha256, f"atelier-tiny [{entry.hash10}]"):
            assert checkpoint_resolve_for_user(personas["charlie"], ident).path == entry.path
        with pytest.raises(ModelNotFound):
            checkpoint_resolve_for_user(personas["charlie"], "mine")
        with pytest.raises(ModelNotFound):
            checkpoint_resolve_for_user(personas["bob"], "mine.safetensors")
    finally:
        (alice_dir / "mine.safetensors").unlink()
        shutil.rmtree(team_dir)
        (alice_dir / "ignored.ckpt").unlink()
