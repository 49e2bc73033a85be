"""Operators' tab switches (issue 22, item 6; PAI's `--always-hide-tabs`).

`ATELIER_HIDDEN_TABS` hides workspace tabs for everyone, `Tenant.hidden_workspace_tabs` for one
tenant's members. A hidden tab is not built, the buttons that send to it are not either, and a
tab hidden after the member's process started is hidden by the next page load and refuses its
functions at each call (the refusal over Gradio's HTTP routes is in
`tests/security/test_workspace_tabs.py`).
"""

from __future__ import annotations

import gradio as gr
import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError

from frontend.member_selectors import hidden_tabs_for_user
from frontend.workspace.tab_ids import HIDEABLE_TABS, WORKSPACE_TABS, UnknownTab, parse_hidden_tabs
from frontend.workspace.ui import Workspace, build_workspace
from tenants.models import Tenant
from tenants.services import tenant_hidden_tabs_set


def workspace_for(user) -> Workspace:
    return build_workspace(user).atelier_workspace


def tab_ids(workspace: Workspace) -> set[str]:
    """The workspace's own tabs built (not the ControlNet units' tabs)."""
    return {block.id for block in workspace.blocks.blocks.values() if isinstance(block, gr.Tab)} & set(WORKSPACE_TABS)


def wired(workspace: Workspace) -> set[str]:
    return {fn.name for fn in workspace.blocks.fns.values() if fn.fn is not None}


def test_tab_lists_are_parsed_strictly() -> None:
    assert parse_hidden_tabs("") == ()
    assert parse_hidden_tabs(" PNGInfo, img2img,,extensions ") == ("img2img", "pnginfo", "extensions")
    assert parse_hidden_tabs("beautifulprompt,png_info") == ("beautiful-prompt", "pnginfo")
    with pytest.raises(UnknownTab, match="unknown workspace tab 'upscale'.*img2img"):
        parse_hidden_tabs("pnginfo,upscale")
    with pytest.raises(UnknownTab, match="txt2img tab cannot be hidden"):
        parse_hidden_tabs("txt2img")
    assert set(HIDEABLE_TABS) == set(WORKSPACE_TABS) - {"txt2img"}
    assert parse_hidden_tabs("extras") == ("extras",)  # the Extras tab can be hidden like the others


def test_a_bad_platform_setting_stops_the_start_naming_the_tab() -> None:
    from config.settings import _hidden_tabs

    assert _hidden_tabs("gallery") == ("gallery",)
    with pytest.raises(ImproperlyConfigured, match="ATELIER_HIDDEN_TABS='galery'.*unknown workspace tab 'galery'"):
        _hidden_tabs("galery")


@pytest.mark.django_db
def test_a_tenant_s_list_is_validated_in_admin_and_in_the_service(personas) -> None:
    from tenants.admin import TenantForm

    studio_a = Tenant.objects.get(slug="studio-a")
    form = TenantForm(instance=studio_a, data={"slug": "studio-a", "name": "Studio A", "share_weight": 1.0, "time_zone": "UTC",
                                               "hidden_workspace_tabs": ["pnginfo", "extensions"]})
    assert form.is_valid(), form.errors
    form.save()
    studio_a.refresh_from_db()
    assert studio_a.hidden_workspace_tabs == ["pnginfo", "extensions"]
    refused = TenantForm(instance=studio_a, data={"slug": "studio-a", "name": "Studio A", "share_weight": 1.0, "time_zone": "UTC",
                                                  "hidden_workspace_tabs": ["txt2img"]})
    assert not refused.is_valid() and "hidden_workspace_tabs" in refused.errors
    with pytest.raises(ValidationError, match="unknown workspace tab 'upscale'"):
        tenant_hidden_tabs_set(tenant=studio_a, tabs=["upscale"])
    studio_a.hidden_workspace_tabs = ["nope"]
    with pytest.raises(ValidationError):
        studio_a.full_clean()


@pytest.mark.django_db
def test_hidden_tabs_are_the_platform_s_and_the_member_s_tenant_s(personas, settings) -> None:
    tenant_hidden_tabs_set(tenant=Tenant.objects.get(slug="studio-a"), tabs=["pnginfo"])
    settings.ATELIER_HIDDEN_TABS = ("gallery",)
    assert hidden_tabs_for_user(personas["alice"]) == {"pnginfo", "gallery"}
    assert hidden_tabs_for_user(personas["bob"]) == {"pnginfo", "gallery"}
    assert hidden_tabs_for_user(personas["charlie"]) == {"gallery"}
    assert hidden_tabs_for_user(personas["admin"]) == {"gallery"}  # an operator has no tenant
    Tenant.objects.filter(slug="studio-a").update(hidden_workspace_tabs=["pnginfo", "retired-tab"])
    assert hidden_tabs_for_user(personas["alice"]) == {"pnginfo", "gallery"}  # an unknown stored id: ignored


@pytest.mark.django_db
def test_a_tab_hidden_for_a_tenant_is_not_built_for_its_members_only(personas, tiny_checkpoint_path) -> None:
    tenant_hidden_tabs_set(tenant=Tenant.objects.get(slug="studio-a"), tabs=["pnginfo", "img2img", "extensions"])
    alice = workspace_for(personas["alice"])
    assert {"txt2img", "gallery", "settings"} <= tab_ids(alice)
    assert not tab_ids(alice) & {"pnginfo", "img2img", "extensions"}
    functions = wired(alice)
    assert not functions & {"read_pnginfo", "send_pnginfo_to_txt2img", "generate_img2img", "send_to_img2img",
                            "apply_extensions"}
    assert "send_to_img2img" not in alice.txt2img.components and alice.gallery.send is None
    on_load = alice.on_load()  # the page load's update fits the outputs it was wired with
    assert len(on_load) == len(alice.on_load_outputs())

    charlie = workspace_for(personas["charlie"])
    assert {"txt2img", "img2img", "pnginfo", "extensions"} <= tab_ids(charlie)
    assert {"read_pnginfo", "generate_img2img", "send_to_img2img", "apply_extensions"} <= wired(charlie)


@pytest.mark.django_db
def test_every_hideable_tab_can_be_hidden_and_the_page_still_loads(personas, tiny_checkpoint_path, settings) -> None:
    settings.ATELIER_HIDDEN_TABS = HIDEABLE_TABS
    workspace = workspace_for(personas["charlie"])
    assert tab_ids(workspace) == {"txt2img"}
    assert len(workspace.on_load()) == len(workspace.on_load_outputs())
    assert len(workspace.refresh_model_lists()) == 3  # checkpoints, VAEs, txt2img's networks


@pytest.mark.django_db
def test_a_tab_hidden_after_the_process_started_is_hidden_on_load_and_refuses_its_functions(
    personas, tiny_checkpoint_path,
) -> None:
    workspace = workspace_for(personas["alice"])  # built with every tab
    studio_a = Tenant.objects.get(slug="studio-a")
    tenant_hidden_tabs_set(tenant=studio_a, tabs=["pnginfo", "img2img"])

    stored = workspace.stored_settings()
    assert stored[id(workspace.pnginfo.block)]["visible"] == "hidden"
    assert stored[id(workspace.img2img.block)]["visible"] == "hidden"
    assert stored[id(workspace.gallery.block)]["visible"] is True

    with pytest.raises(gr.Error, match="PNG Info tab is turned off"):
        workspace.pnginfo.read_pnginfo(None)
    with pytest.raises(gr.Error, match="img2img tab is turned off"):
        next(workspace.img2img.generate_img2img())
    # Sending to a hidden tab is refused too, from a tab that is still shown.
    with pytest.raises(gr.Error, match="img2img tab is turned off"):
        workspace.gallery.send_to_img2img(["job", 0])
    # A page load's reattach of the hidden tab changes nothing, quietly (no error on every load).
    assert list(workspace.img2img.reattach()) == [tuple(gr.skip() for _ in range(6))]

    tenant_hidden_tabs_set(tenant=studio_a, tabs=[])
    assert workspace.pnginfo.read_pnginfo(None) == ("", {})
    assert workspace.stored_settings()[id(workspace.pnginfo.block)]["visible"] is True
