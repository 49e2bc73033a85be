"""Prompt styles as data (`tenants.PromptStyle`): the built-ins seeded public by the migration, the
member's own, the team's and the public styles and which one a name means, the member's save and
delete, and operators writing public and team styles in Django admin."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from a1111.errors import Forbidden, InvalidField, NotFound
from tenants.models import PromptStyle, Tenant
from tenants.selectors import prompt_style_texts_for_user, prompt_styles_for_user
from tenants.services import prompt_style_delete, prompt_style_save

pytestmark = pytest.mark.django_db

BUILTINS = {"Cinematic", "Watercolor", "Line art", "Product shot", "Quality tags"}


def _team_style(slug: str, name: str, prompt: str = "{prompt}, team look") -> PromptStyle:
    return PromptStyle.objects.create(scope=PromptStyle.Scope.TENANT, tenant=Tenant.objects.get(slug=slug),
                                      name=name, prompt=prompt)


def test_the_migration_seeds_the_former_built_ins_as_public_styles() -> None:
    public = {s.name: s for s in PromptStyle.objects.filter(scope=PromptStyle.Scope.PUBLIC)}
    assert BUILTINS <= set(public)
    assert public["Watercolor"].prompt == "watercolor painting of {prompt}, soft edges, paper texture"
    assert public["Watercolor"].negative_prompt == "photo, 3d render"


def test_a_member_sees_own_team_and_public_styles_and_the_most_personal_wins(personas) -> None:
    alice, bob, charlie = personas["alice"], personas["bob"], personas["charlie"]
    _team_style("studio-a", "Brand", "{prompt}, studio-a brand colours")
    _team_style("studio-a", "Cinematic", "{prompt}, studio-a cinematic")  # shadows the public one for the team
    prompt_style_save(user=alice, name="Brand", prompt="{prompt}, alice's brand", negative_prompt="")
    prompt_style_save(user=alice, name="Mine", prompt="mine", negative_prompt="ugly")

    def seen(user) -> dict[str, tuple[str, str]]:
        return {s.name: (s.scope, s.prompt) for s in prompt_styles_for_user(user)}

    assert seen(alice)["Brand"] == ("user", "{prompt}, alice's brand")
    assert seen(alice)["Cinematic"] == ("tenant", "{prompt}, studio-a cinematic")
    assert seen(alice)["Mine"] == ("user", "mine") and BUILTINS <= set(seen(alice))
    assert seen(bob)["Brand"] == ("tenant", "{prompt}, studio-a brand colours") and "Mine" not in seen(bob)
    assert "Brand" not in seen(charlie) and "Mine" not in seen(charlie)
    assert seen(charlie)["Cinematic"][0] == "public"
    names = [s.name for s in prompt_styles_for_user(alice)]
    assert names == sorted(names, key=str.casefold) and len(names) == len(set(names))  # one per name
    assert prompt_style_texts_for_user(alice)["Mine"].negative_prompt == "ugly"


def test_saving_again_replaces_the_members_own_style_and_bad_input_names_the_field(personas) -> None:
    alice = personas["alice"]
    first = prompt_style_save(user=alice, name="  Mine ", prompt="one", negative_prompt="")
    second = prompt_style_save(user=alice, name="Mine", prompt="two", negative_prompt="n")
    assert first.pk == second.pk and first.name == "Mine"
    assert PromptStyle.objects.get(pk=first.pk).prompt == "two"
    for kwargs, field in (({"name": " "}, "style_name"), ({"name": "x" * 101}, "style_name"),
                          ({"name": "a\nb"}, "style_name"), ({"prompt": "", "negative_prompt": " "}, "prompt"),
                          ({"prompt": "p" * 10_001}, "prompt")):
        values = {"name": "ok", "prompt": "p", "negative_prompt": "", **kwargs}
        with pytest.raises(InvalidField) as refused:
            prompt_style_save(user=alice, **values)
        assert refused.value.field == field


def test_a_member_deletes_only_their_own_styles(personas) -> None:
    alice, bob = personas["alice"], personas["bob"]
    prompt_style_save(user=alice, name="Mine", prompt="mine", negative_prompt="")
    _team_style("studio-a", "Brand")
    with pytest.raises(NotFound):
        prompt_style_delete(user=bob, name="Mine")  # alice's: as if it did not exist
    with pytest.raises(Forbidden, match="team or public"):
        prompt_style_delete(user=alice, name="Brand")
    with pytest.raises(Forbidden, match="team or public"):
        prompt_style_delete(user=alice, name="Cinematic")
    assert PromptStyle.objects.filter(name__in=["Mine", "Brand", "Cinematic"]).count() == 3
    prompt_style_delete(user=alice, name="Mine")
    assert not PromptStyle.objects.filter(name="Mine").exists()


def test_the_scope_and_its_owner_agree_in_the_database_and_in_forms(personas) -> None:
    tenant = Tenant.objects.get(slug="studio-a")
    bad = [
        {"scope": "public", "owner": personas["alice"]},
        {"scope": "tenant"},
        {"scope": "user", "tenant": tenant},
    ]
    for fields in bad:
        style = PromptStyle(name="x", prompt="p", **fields)
        with pytest.raises(ValidationError):
            style.full_clean()
        with pytest.raises(IntegrityError), transaction.atomic():
            style.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        PromptStyle.objects.create(scope="public", name="Cinematic", prompt="again")  # one public name


def test_operators_write_public_and_team_styles_in_admin(client, personas) -> None:
    client.force_login(personas["admin"])
    tenant = Tenant.objects.get(slug="studio-a")
    assert client.get("/admin/tenants/promptstyle/").status_code == 200
    response = client.post("/admin/tenants/promptstyle/add/", {
        "name": "Team look", "scope": "tenant", "tenant": tenant.pk, "owner": "",
        "prompt": "{prompt}, team look", "negative_prompt": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    assert [s.name for s in prompt_styles_for_user(personas["bob"]) if s.scope == "tenant"] == ["Team look"]
    refused = client.post("/admin/tenants/promptstyle/add/", {
        "name": "Orphan", "scope": "tenant", "tenant": "", "owner": "", "prompt": "x", "negative_prompt": "",
    })
    assert refused.status_code == 200 and "a team style needs its tenant" in refused.content.decode()
    client.force_login(personas["alice"])  # a tenant admin is no operator
    assert client.get("/admin/tenants/promptstyle/").status_code == 302
