"""The workspace's ControlNet panel: A1111's "ControlNet Unit 0/1/2" tabs in txt2img and img2img.

Each unit is a set of Gradio components; the generate callbacks receive their values after the
form's own fields (`UNIT_FIELDS` per unit, `UNIT_COUNT` units) and `units_from_args` groups them
back into one dict per unit. `frontend/workspace/jobs.py` turns the enabled ones into
`alwayson_scripts.controlnet.args` entries, the sd-webui-controlnet API form every other client
sends, so the API's own parser validates them and `job_submit` resolves each model among the
member's own, team and public ControlNets.

The preprocessors offered are the ones the workers run (`runtime.controlnet.preprocessors`), with
the extension's threshold sliders (labels, ranges, defaults) where a preprocessor has any
(`THRESHOLD_SLIDERS`). The layout is built here; its callbacks are `Workspace` methods (ui.py),
so they share its error handling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gradio as gr
from django.contrib.auth.models import AbstractUser

from inference.model_registry import model_list_for_user

UNIT_COUNT = 3
# One unit's components, in the order the callbacks receive their values.
UNIT_FIELDS = (
    "enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "control_mode",
    "resize_mode", "pixel_perfect", "processor_res", "threshold_a", "threshold_b",
)
# (label key, API value): the extension's names, sent as its integer codes.
CONTROL_MODE_CHOICES = (("controlnet_mode_balanced", 0), ("controlnet_mode_prompt", 1), ("controlnet_mode_control", 2))
RESIZE_MODE_CHOICES = (("controlnet_resize_just", 0), ("controlnet_resize_crop", 1), ("controlnet_resize_fill", 2))
DEFAULT_PROCESSOR_RES = 512


@dataclass(frozen=True)
class ThresholdSlider:
    """One of a preprocessor's two sliders, as the extension shows it."""

    label_key: str
    minimum: float
    maximum: float
    value: float
    step: float = 1


# The extension's sliders (its `preprocessor_sliders_config`) for the preprocessors workers run;
# a preprocessor not listed has none (the API then uses its own defaults).
THRESHOLD_SLIDERS: dict[str, tuple[ThresholdSlider | None, ThresholdSlider | None]] = {
    "canny": (ThresholdSlider("controlnet_canny_low", 1, 255, 100), ThresholdSlider("controlnet_canny_high", 1, 255, 200)),
    "scribble_xdog": (ThresholdSlider("controlnet_xdog_threshold", 1, 64, 32), None),
    "threshold": (ThresholdSlider("controlnet_binary_threshold", 0, 255, 127), None),
    "blur_gaussian": (ThresholdSlider("controlnet_sigma", 0.01, 64, 9, 0.01), None),
    "tile_resample": (ThresholdSlider("controlnet_down_sampling", 1, 8, 1, 0.01), None),
}


def threshold_sliders(module: str | None) -> tuple[ThresholdSlider | None, ThresholdSlider | None]:
    return THRESHOLD_SLIDERS.get(module or "none", (None, None))


def preprocessor_choices() -> list[str]:
    """The preprocessors the workers run, "none" first (as `/controlnet/module_list`)."""
    # numpy/OpenCV (no torch): imported when a workspace is built, not when this module is
    from a1111.preprocessors import available_preprocessors

    modules = available_preprocessors()
    return ["none", *(name for name in modules if name != "none")]


def model_choices(user: AbstractUser) -> list[str]:
    """The ControlNets `user` may use (their own, their team's, the public ones), named as
    `/controlnet/model_list` names them: `name [sha256[:8]]`."""
    return [f"{entry.model_name} [{entry.sha256[:8]}]" for entry in model_list_for_user(user, "ControlNet")]


def units_from_args(values: Sequence[Any]) -> list[dict[str, Any]]:
    """The flat unit values the callbacks receive, one dict per unit."""
    size = len(UNIT_FIELDS)
    if len(values) != size * UNIT_COUNT:
        raise ValueError(f"expected {size * UNIT_COUNT} ControlNet values, got {len(values)}")
    return [dict(zip(UNIT_FIELDS, values[start:start + size], strict=True)) for start in range(0, len(values), size)]


def enabled_units(units: Sequence[dict[str, Any]] | None) -> list[tuple[int, dict[str, Any]]]:
    """(unit number as the tabs show it, unit) of each enabled unit."""
    return [(number, unit) for number, unit in enumerate(units or []) if unit.get("enabled")]


class Translating(Protocol):
    """What the panel needs from the workspace: its strings and its label registry."""

    def t(self, key: str) -> str: ...
    def tr(self, component: Any, key: str, attr: str = "label", **params: Any) -> Any: ...
    def tr_choices(self, component: Any, choices: Sequence[tuple[str, Any]]) -> Any: ...


def build_panel(workspace: Translating, kind: str, models: list[str], modules: list[str]) -> list[dict[str, Any]]:
    """The closed "ControlNet" accordion with one tab per unit; each unit's components by field
    name, plus its model "refresh" button."""
    t = workspace.t
    units = []
    accordion = workspace.tr(gr.Accordion(t("controlnet"), open=False, elem_id=f"atelier-{kind}-controlnet"), "controlnet")
    with accordion, gr.Tabs():
        for index in range(UNIT_COUNT):
            prefix = f"atelier-{kind}-cn{index}"
            u: dict[str, Any] = {}
            with workspace.tr(gr.Tab(t("controlnet_unit").format(index=index), id=f"{kind}-cn{index}"),
                              "controlnet_unit", index=index):
                image_key = "controlnet_image_img2img" if kind == "img2img" else "controlnet_image"
                u["image"] = workspace.tr(gr.Image(
                    label=t(image_key), type="pil", sources=("upload", "clipboard"), height=260,
                    elem_id=f"{prefix}-image",
                ), image_key)
                with gr.Row():
                    u["enabled"] = workspace.tr(gr.Checkbox(
                        value=False, label=t("controlnet_enable"), elem_id=f"{prefix}-enabled",
                    ), "controlnet_enable")
                    u["pixel_perfect"] = workspace.tr(gr.Checkbox(
                        value=False, label=t("controlnet_pixel_perfect"),
                    ), "controlnet_pixel_perfect")
                with gr.Row(equal_height=True):
                    u["module"] = workspace.tr(gr.Dropdown(
                        choices=modules, value="none", label=t("controlnet_module"), elem_id=f"{prefix}-module",
                        scale=2,
                    ), "controlnet_module")
                    u["model"] = workspace.tr(gr.Dropdown(
                        choices=models, value=None, label=t("controlnet_model"), elem_id=f"{prefix}-model", scale=3,
                    ), "controlnet_model")
                    u["refresh"] = gr.Button("🔄", scale=0, min_width=48, elem_id=f"{prefix}-refresh")
                with gr.Row():
                    u["weight"] = workspace.tr(gr.Slider(
                        0, 2, value=1, step=0.05, label=t("controlnet_weight"), elem_id=f"{prefix}-weight",
                    ), "controlnet_weight")
                    u["guidance_start"] = workspace.tr(gr.Slider(
                        0, 1, value=0, step=0.01, label=t("controlnet_guidance_start"),
                    ), "controlnet_guidance_start")
                    u["guidance_end"] = workspace.tr(gr.Slider(
                        0, 1, value=1, step=0.01, label=t("controlnet_guidance_end"),
                    ), "controlnet_guidance_end")
                with gr.Row():
                    # Shown for a preprocessor that has them (see `Workspace.controlnet_module_changed`).
                    u["processor_res"] = workspace.tr(gr.Slider(
                        64, 2048, value=DEFAULT_PROCESSOR_RES, step=8, label=t("controlnet_processor_res"),
                        visible=False,
                    ), "controlnet_processor_res")
                    u["threshold_a"] = gr.Slider(
                        0, 255, value=100, step=1, label=t("controlnet_threshold_a"), visible=False,
                    )
                    u["threshold_b"] = gr.Slider(
                        0, 255, value=200, step=1, label=t("controlnet_threshold_b"), visible=False,
                    )
                u["control_mode"] = workspace.tr_choices(workspace.tr(gr.Radio(
                    choices=[(t(key), value) for key, value in CONTROL_MODE_CHOICES], value=0,
                    label=t("controlnet_control_mode"), elem_id=f"{prefix}-control-mode",
                ), "controlnet_control_mode"), CONTROL_MODE_CHOICES)
                u["resize_mode"] = workspace.tr_choices(workspace.tr(gr.Radio(
                    choices=[(t(key), value) for key, value in RESIZE_MODE_CHOICES], value=1,
                    label=t("controlnet_resize_mode"),
                ), "controlnet_resize_mode"), RESIZE_MODE_CHOICES)
            units.append(u)
    return units
