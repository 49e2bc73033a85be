"""The Styles panel of the workspace (`frontend/workspace/styles.py`): the picker lists the
member's own, team and public styles; 💾 saves the prompts as the member's own style and 🗑 deletes
it; a team or public style cannot be deleted there, with a message saying so."""

from __future__ import annotations

import gradio as gr
import pytest

from frontend.member_services import extension_set_enabled
from frontend.workspace.jobs import WorkspaceError
from tenants.models import PromptStyle, Tenant
from tests.frontend.test_workspace_ui import args, form, workspace_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(personas, tiny_checkpoint_path):
    extension_set_enabled(user=personas["alice"], name="prompt-styles", enabled=True)
    PromptStyle.objects.create(scope="tenant", tenant=Tenant.objects.get(slug="studio-a"), name="Brand",
                               prompt="brand poster of {prompt}")
    return workspace_for(personas["alice"])


def _choices(update) -> dict[str, str]:
    return {value: label for label, value in update.choices}


def test_the_picker_lists_own_team_and_public_styles_labelled(alice) -> None:
    listed = _choices(alice.txt2img["styles"])
    assert listed["Brand"] == "Brand (team)" and listed["Watercolor"] == "Watercolor"
    assert alice.txt2img.styles_panel.row.visible is True


def test_save_then_generate_then_delete_the_members_own_style(alice, personas) -> None:
    panel = alice.txt2img.styles_panel
    name_box, *pickers = panel.save_style("Alice look", "{prompt}, alice look", "blur", [], [], [])
    assert name_box == "" and len(pickers) == 2  # txt2img's and img2img's pickers, both re-listed
    assert all(_choices(picker)["Alice look"] == "Alice look (yours)" for picker in pickers)
    stored = PromptStyle.objects.get(name="Alice look")
    assert (stored.scope, stored.owner, stored.negative_prompt) == ("user", personas["alice"], "blur")

    job = alice.txt2img.submit(*args(form(styles=["Alice look", "Brand"])))
    assert job.params["prompt"] == "brand poster of a lighthouse at dawn, alice look"
    assert job.params["negative_prompt"] == "fog, blur"

    # 💾 with no name and one style picked overwrites that one (A1111's save over the selection)
    panel.save_style("", "{prompt}, alice look v2", "", ["Alice look"], ["Alice look"], [])
    assert PromptStyle.objects.get(name="Alice look").prompt == "{prompt}, alice look v2"

    pickers = alice.img2img.styles_panel.delete_style(["Alice look"], ["Alice look", "Brand"], ["Alice look"])
    assert not PromptStyle.objects.filter(name="Alice look").exists()
    assert [picker.value for picker in pickers] == [["Brand"], []]  # the deleted pick is dropped
    assert "Alice look" not in _choices(pickers[0])


def test_team_and_public_styles_are_not_deleted_from_the_workspace(alice) -> None:
    panel = alice.txt2img.styles_panel
    panel.save_style("Mine", "mine", "", [], [], [])
    for picked in (["Brand"], ["Watercolor"], ["Mine", "Brand"]):
        with pytest.raises(gr.Error, match="team or public style"):
            panel.delete_style(picked, picked, [])
    assert PromptStyle.objects.filter(name__in=["Brand", "Watercolor", "Mine"]).count() == 3  # nothing deleted
    with pytest.raises(gr.Error, match="Pick one of your own styles"):
        panel.delete_style([], [], [])
    with pytest.raises(gr.Error, match="style_name: give the style a name"):
        panel.save_style("", "p", "", [], [], [])


def test_a_style_deleted_since_it_was_picked_is_an_error_naming_it(alice) -> None:
    alice.txt2img.styles_panel.save_style("Gone", "gone", "", [], [], [])
    PromptStyle.objects.filter(name="Gone").delete()
    with pytest.raises(WorkspaceError, match=r"styles\[0\]: unknown style 'Gone'"):
        alice.txt2img.submit(*args(form(styles=["Gone"])))


def test_a_page_load_relists_the_styles(alice, personas) -> None:
    PromptStyle.objects.create(scope="user", owner=personas["alice"], name="Saved elsewhere", prompt="x")
    stored = alice.stored_settings()
    assert "Saved elsewhere" in _choices_of(stored[id(alice.txt2img["styles"])]["choices"])


def _choices_of(choices) -> set[str]:
    return {value for _label, value in choices}
