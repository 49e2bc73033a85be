"""Prompt styles are scoped (issue 20): a member's own style is invisible and unusable for anyone
else, their teammates included; a team's style only for its tenant; nobody deletes a style that is
not their own, a public one included. Checked on every surface: `/sdapi/v1/prompt-styles`, the
`styles` of `/sdapi/v1/txt2img`, the workspace's picker, its generate and its 🗑."""

from __future__ import annotations

import gradio as gr
import pytest

from a1111.errors import Forbidden, NotFound
from frontend.member_services import extension_set_enabled
from frontend.workspace.jobs import WorkspaceError
from inference.models import Job
from tenants.models import PromptStyle, Tenant
from tenants.services import prompt_style_delete, prompt_style_save
from tests.frontend.test_workspace_ui import args, form, workspace_for

pytestmark = pytest.mark.django_db

TINY = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}


@pytest.fixture
def styles(personas, tiny_checkpoint_path) -> dict[str, PromptStyle]:
    for user in personas.values():
        extension_set_enabled(user=user, name="prompt-styles", enabled=True)
    return {
        "alice": prompt_style_save(user=personas["alice"], name="Alice secret", prompt="{prompt}, alice secret",
                                   negative_prompt=""),
        "team": PromptStyle.objects.create(scope="tenant", tenant=Tenant.objects.get(slug="studio-a"),
                                           name="Studio A house", prompt="{prompt}, studio-a house"),
    }


def _listed(api, user: str) -> set[str]:
    response = api(user).get("/sdapi/v1/prompt-styles")
    assert response.status_code == 200
    return {item["name"] for item in response.json()}


def _picker(user) -> set[str]:
    return {value for _label, value in workspace_for(user).txt2img["styles"].choices}


def test_alices_style_is_invisible_to_bob_and_charlie(api, personas, styles) -> None:
    assert {"Alice secret", "Studio A house"} <= _listed(api, "alice")
    assert {"Alice secret", "Studio A house"} <= _picker(personas["alice"])  # the positive control
    for outsider in ("bob", "charlie"):
        assert "Alice secret" not in _listed(api, outsider)
        assert "Alice secret" not in _picker(personas[outsider])
        assert "alice secret" not in str(api(outsider).get("/sdapi/v1/prompt-styles").json())


def test_alices_style_is_unusable_for_bob_and_charlie(api, personas, styles) -> None:
    for outsider in ("bob", "charlie"):
        response = api(outsider).post("/sdapi/v1/txt2img", {**TINY, "styles": ["Alice secret"]})
        assert response.status_code == 422 and "unknown style 'Alice secret'" in response.json()["detail"]
        assert "alice secret," not in response.content.decode()  # her prompt text is never echoed
        with pytest.raises(WorkspaceError, match="unknown style 'Alice secret'"):
            workspace_for(personas[outsider]).txt2img.submit(*args(form(styles=["Alice secret"])))
    assert not Job.objects.exists()


def test_a_team_style_of_studio_a_is_invisible_and_unusable_for_charlie(api, personas, styles) -> None:
    assert "Studio A house" in _listed(api, "bob") and "Studio A house" in _picker(personas["bob"])
    assert "Studio A house" not in _listed(api, "charlie")
    assert "Studio A house" not in _picker(personas["charlie"])
    response = api("charlie").post("/sdapi/v1/txt2img", {**TINY, "styles": ["Studio A house"]})
    assert response.status_code == 422 and "Studio A house" in response.json()["detail"]


def test_charlie_cannot_delete_alices_or_a_public_style(personas, styles) -> None:
    charlie = personas["charlie"]
    panel = workspace_for(charlie).txt2img.styles_panel
    with pytest.raises(gr.Error, match="no style named 'Alice secret'"):
        panel.delete_style(["Alice secret"], [], [])
    with pytest.raises(gr.Error, match="team or public style"):
        panel.delete_style(["Watercolor"], ["Watercolor"], [])
    with pytest.raises(NotFound):
        prompt_style_delete(user=charlie, name="Studio A house")
    with pytest.raises(NotFound):
        prompt_style_delete(user=personas["bob"], name="Alice secret")  # a teammate neither
    with pytest.raises(Forbidden):
        prompt_style_delete(user=personas["bob"], name="Studio A house")  # his team's: operators'
    assert PromptStyle.objects.filter(pk__in=[styles["alice"].pk, styles["team"].pk]).count() == 2
    assert PromptStyle.objects.filter(scope="public", name="Watercolor").exists()


def test_saving_a_style_of_the_same_name_never_touches_anothers(personas, styles) -> None:
    """Charlie's 💾 "Alice secret" is his own style; alice's is unchanged, and each sees their own."""
    prompt_style_save(user=personas["charlie"], name="Alice secret", prompt="charlie's", negative_prompt="")
    prompt_style_save(user=personas["bob"], name="Studio A house", prompt="bob's", negative_prompt="")
    assert PromptStyle.objects.get(pk=styles["alice"].pk).prompt == "{prompt}, alice secret"
    assert PromptStyle.objects.get(pk=styles["team"].pk).prompt == "{prompt}, studio-a house"
    assert PromptStyle.objects.filter(name="Alice secret").count() == 2


def test_anonymous_callers_get_no_styles(api, styles) -> None:
    response = api(None).get("/sdapi/v1/prompt-styles")
    assert response.status_code == 401 and "Alice secret" not in response.content.decode()
