"""The X/Y/Z plot's vocabulary (`a1111/xyz.py`) and grid (`a1111/xyz_grid.py`): A1111's value
syntax, the axis types applied to a request, the cells' order and labels, the cell limit, and
the grid's geometry. Pure: no DB, no torch."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from a1111.errors import RequestValidationError
from a1111.generation import GenerationRequest, Limits, parse_generation_request
from a1111.xyz import (
    NOTHING,
    XyzPlot,
    expand_cells,
    parse_float_values,
    parse_int_values,
    parse_xyz,
    replace_lora_weight,
    split_values,
)
from a1111.xyz_grid import draw_grid, grid_layout

LIMITS = Limits()


def plot(data, max_cells: int = 64) -> XyzPlot:
    return parse_xyz(data, limits=LIMITS, max_cells=max_cells, rng=random.Random(1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1, 2,3", [1, 2, 3]),
        ("1-5", [1, 2, 3, 4, 5]),
        ("1-5 (+2)", [1, 3, 5]),
        ("10-1 (-3)", [10, 7, 4, 1]),
        ("1-10 [5]", [1, 3, 5, 7, 10]),  # np.linspace(1, 10, 5).astype(int)
        ("5-1", [5, 4, 3, 2, 1]),
        ("-3--1", [-3, -2, -1]),
        ("7, 1-3, 20", [7, 1, 2, 3, 20]),
        ("4-4 [1]", [4]),
    ],
)
def test_integer_values_and_ranges_are_a1111s(text, expected) -> None:
    assert parse_int_values(split_values(text), "v") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7, 7.5", [7.0, 7.5]),
        ("0.5-1.5 (+0.25)", [0.5, 0.75, 1.0, 1.25, 1.5]),
        ("3-7 [3]", [3.0, 5.0, 7.0]),
        ("1-0 (-0.5)", [1.0, 0.5, 0.0]),
        ("0.1-0.3 (+0.1)", [0.1, 0.2, 0.3]),
    ],
)
def test_float_values_and_ranges_are_a1111s(text, expected) -> None:
    assert parse_float_values(split_values(text), "v") == expected


def test_values_are_csv_with_quotes() -> None:
    assert split_values('Euler a, "DPM++ 2M, Karras" ,  LMS,') == ["Euler a", "DPM++ 2M, Karras", "LMS"]


@pytest.mark.parametrize(
    ("axes", "field", "words"),
    [
        ({"x": {"type": "steps", "values": "ten"}}, "xyz.x.values", "not an integer"),
        ({"x": {"type": "steps", "values": "1-5 (-1)"}}, "xyz.x.values", "never gets"),
        ({"x": {"type": "steps", "values": "0, 10"}}, "xyz.x.values", "out of range"),
        ({"x": {"type": "steps", "values": "1-100000"}}, "xyz.x.values", "at most"),
        ({"x": {"type": "cfg_scale", "values": "31"}}, "xyz.x.values", "out of range"),
        ({"x": {"type": "sampler", "values": "Euler, Nope"}}, "xyz.x.values", "Nope"),
        ({"x": {"type": "color", "values": "1"}}, "xyz.x.type", "must be one of"),
        ({"x": {"type": "seed"}}, "xyz.x.values", "required"),
        ({"x": {"type": "seed", "values": " , "}}, "xyz.x.values", "no values"),
        ({"x": {"type": "seed", "values": "1"}, "w": {}}, "xyz.w", "unknown axis"),
        ({"x": {"type": "nothing"}}, "xyz.x", "at least one axis"),
        ({"x": "seed"}, "xyz.x", "must be an object"),
        ({"x": {"type": "steps", "values": "1", "lora": "a"}}, "xyz.x.lora", "LoRA-weight"),
        ([], "xyz", "must be an object"),
    ],
)
def test_bad_axes_are_refused_naming_the_field(axes, field, words) -> None:
    with pytest.raises(RequestValidationError) as caught:
        plot(axes)
    assert caught.value.field == field
    assert words in caught.value.message


def test_a_plot_over_the_cell_limit_is_refused_naming_the_limit() -> None:
    axes = {"x": {"type": "seed", "values": "1-5"}, "y": {"type": "steps", "values": "1-5"}}
    assert plot(axes, max_cells=25).cell_count == 25
    with pytest.raises(RequestValidationError) as caught:
        plot(axes, max_cells=24)
    assert caught.value.field == "xyz"
    assert "25 cells" in caught.value.message and "ATELIER_MAX_XYZ_CELLS" in caught.value.message


def test_axis_types_by_a1111_label_and_lists() -> None:
    parsed = plot({"x": {"type": "CFG Scale", "values": [5, "7.5"]}, "y": {"type": "Sampler", "values": "k_euler_a, euler"}})
    assert parsed.x.values == (5.0, 7.5) and parsed.x.labels == ("CFG Scale: 5", "CFG Scale: 7.5")
    assert parsed.y.values == ("Euler a", "Euler") and parsed.y.labels == ("Euler a", "Euler")
    assert parsed.z is NOTHING and parsed.shape == (2, 2, 1)
    assert XyzPlot.from_json(parsed.to_json()) == parsed


def test_a_random_seed_value_is_drawn_once_per_plot() -> None:
    parsed = plot({"x": {"type": "seed", "values": "-1, 5"}})
    assert parsed.x.values[1] == 5 and 0 <= parsed.x.values[0] < 4294967294


def base(**fields) -> GenerationRequest:
    return parse_generation_request({"prompt": "a cat", "seed": 42, "width": 64, "height": 64, "steps": 2, **fields})


def test_cells_are_in_a1111_order_x_fastest_with_their_labels_and_values() -> None:
    parsed = plot({
        "x": {"type": "seed", "values": "1, 2"},
        "y": {"type": "steps", "values": "3, 4"},
        "z": {"type": "cfg_scale", "values": "5, 6"},
    })
    cells = expand_cells(base(), parsed)
    assert [c.position for c in cells][:4] == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]
    assert [(c.request.seed, c.request.steps, c.request.cfg_scale) for c in cells] == [
        (1, 3, 5.0), (2, 3, 5.0), (1, 4, 5.0), (2, 4, 5.0), (1, 3, 6.0), (2, 3, 6.0), (1, 4, 6.0), (2, 4, 6.0),
    ]
    assert cells[5].labels == ("Seed: 2", "Steps: 3", "CFG Scale: 6") == parsed.cell_labels(5)
    assert [c.index for c in cells] == list(range(8))


def test_without_a_seed_axis_every_cell_keeps_the_base_seed() -> None:
    cells = expand_cells(base(seed=-1), plot({"x": {"type": "steps", "values": "1-3"}}))
    assert len({c.request.seed for c in cells}) == 1


def test_prompt_sr_replaces_the_first_value_in_both_prompts() -> None:
    request = base(prompt="a cat on a mat", negative_prompt="ugly cat")
    cells = expand_cells(request, plot({"x": {"type": "prompt_sr", "values": "cat, dog, red fox"}}))
    assert [c.request.prompt for c in cells] == ["a cat on a mat", "a dog on a mat", "a red fox on a mat"]
    assert [c.request.negative_prompt for c in cells] == ["ugly cat", "ugly dog", "ugly red fox"]
    assert [c.labels[0] for c in cells] == ["cat", "dog", "red fox"]


def test_prompt_sr_needs_its_search_text_in_a_prompt() -> None:
    with pytest.raises(RequestValidationError) as caught:
        expand_cells(base(), plot({"y": {"type": "prompt_sr", "values": "dog, wolf"}}))
    assert caught.value.field == "xyz.y.values" and "'dog'" in caught.value.message


def test_checkpoint_vae_and_sampler_axes_set_the_request() -> None:
    cells = expand_cells(base(), plot({
        "x": {"type": "checkpoint", "values": "a.safetensors, b"},
        "y": {"type": "vae", "values": "None, kl.safetensors"},
        "z": {"type": "sampler", "values": "DPM++ 2M SDE Karras, k_euler"},
    }))
    assert [c.request.checkpoint for c in cells] == ["a.safetensors", "b"] * 4
    assert cells[1].request.override_settings["sd_model_checkpoint"] == "b"
    assert [c.request.vae for c in cells] == ["None", "None", "kl.safetensors", "kl.safetensors"] * 2
    assert [(c.request.sampler_name, c.request.scheduler) for c in cells][::4] == [("DPM++ 2M SDE", "Karras"), ("Euler", "Automatic")]
    assert [c.labels[2] for c in cells][::4] == ["DPM++ 2M SDE Karras", "Euler"]


def test_lora_weight_replaces_the_tags_weights() -> None:
    assert replace_lora_weight("x <lora:a:0.3> <lora:b:1:0.5:dyn=4> <hypernet:h:1>", 0.8) == (
        "x <lora:a:0.8> <lora:b:0.8:dyn=4> <hypernet:h:1>", 2)
    assert replace_lora_weight("<lora:a> <lora:b:2>", 0.5, "b") == ("<lora:a> <lora:b:0.5>", 1)
    cells = expand_cells(base(prompt="a cat <lora:style:1>"), plot({"x": {"type": "lora_weight", "values": "0-1 [3]"}}))
    assert [c.request.prompt for c in cells] == ["a cat <lora:style:0>", "a cat <lora:style:0.5>", "a cat <lora:style:1>"]
    assert cells[1].labels[0] == "LoRA weight: 0.5"
    hires = base(prompt="a cat <lora:style:1>", enable_hr=True, hr_prompt="a dog <lora:style:1>")
    cells = expand_cells(hires, plot({"x": {"type": "lora_weight", "values": "0.5"}}))
    assert cells[0].request.hr_prompt == "a dog <lora:style:0.5>"  # still the first pass's networks
    with pytest.raises(RequestValidationError) as caught:
        expand_cells(base(), plot({"x": {"type": "lora_weight", "values": "0.5"}}))
    assert caught.value.field == "xyz.x.values" and "<lora:" in caught.value.message


def tile(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_the_grid_puts_each_cell_in_its_place_under_its_labels() -> None:
    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]
    labels = (["Seed: 1", "Seed: 2"], ["Steps: 1", "Steps: 2"], [""])
    grid = draw_grid([tile(c) for c in colors], (2, 2, 1), labels)
    layout = grid_layout((2, 2, 1), (64, 64), labels)
    assert grid.size == layout.size
    pad_left, pad_top = layout.boxes[0]
    assert pad_left > 0 and pad_top > 0  # room for the labels
    assert grid.size == (pad_left + 2 * 64, pad_top + 2 * 64)
    assert layout.boxes == ((pad_left, pad_top), (pad_left + 64, pad_top), (pad_left, pad_top + 64), (pad_left + 64, pad_top + 64))
    for color, (left, top) in zip(colors, layout.boxes, strict=True):
        assert grid.crop((left, top, left + 64, top + 64)).getcolors() == [(64 * 64, color)]
    label_area = grid.crop((pad_left, 0, pad_left + 64, pad_top))
    assert len(label_area.getcolors(10_000)) > 1  # text drawn


def test_a_missing_cell_is_a_blank_tile_and_z_grids_sit_side_by_side() -> None:
    labels = (["a", "b"], [""], ["z1", "z2"])
    grid = draw_grid([tile((9, 9, 9)), None, tile((9, 9, 9)), tile((9, 9, 9))], (2, 1, 2), labels)
    layout = grid_layout((2, 1, 2), (64, 64), labels)
    assert grid.size == layout.size and grid.width > 4 * 64
    left, top = layout.boxes[1]
    assert grid.crop((left, top, left + 64, top + 64)).getcolors() == [(64 * 64, (235, 235, 235))]
    assert layout.boxes[2][0] > layout.boxes[1][0] + 64  # the second z sub-grid is to the right


def test_a_one_axis_plot_has_no_row_labels() -> None:
    layout = grid_layout((3, 1, 1), (64, 32), (["1", "2", "3"], [""], [""]))
    assert layout.boxes[0][0] == 0 and layout.size[0] == 3 * 64


def test_a_replacement_may_not_make_a_prompt_over_the_limit() -> None:
    limits = Limits(max_prompt_chars=20)
    request = parse_generation_request({"prompt": "a cat", "seed": 1}, limits=limits)
    parsed = parse_xyz({"x": {"type": "prompt_sr", "values": "cat, dog, " + "x" * 30}}, limits=LIMITS, max_cells=64)
    assert len(expand_cells(request, parsed)) == 3  # without limits: not checked
    with pytest.raises(RequestValidationError) as caught:
        expand_cells(request, parsed, limits)
    assert caught.value.field == "xyz.x.values" and "at most 20" in caught.value.message


def test_sampler_parameter_axes_apply_where_the_cells_sampler_uses_them_in_any_axis_order() -> None:
    base = parse_generation_request({"prompt": "a", "steps": 4, "sampler_name": "Euler"}, rng=random.Random(1))
    for axes in ({"x": {"type": "Sampler", "values": "Euler, Euler a"}, "y": {"type": "Eta", "values": "0.3, 1"}},
                 {"x": {"type": "eta", "values": "0.3, 1"}, "y": {"type": "sampler", "values": "Euler, Euler a"}}):
        cells = expand_cells(base, plot(axes))
        etas = sorted(f"{cell.request.sampler_name}: {cell.request.sampler_parameters.eta}" for cell in cells)
        # Euler takes no eta; Euler a's 1 is its default (None)
        assert etas == ["Euler a: 0.3", "Euler a: None", "Euler: None", "Euler: None"], axes
    churned = expand_cells(base, plot({"x": {"type": "Sigma Churn", "values": "0, 2.5"}}))
    assert [cell.request.sampler_parameters.s_churn for cell in churned] == [0.0, 2.5]
    assert [cell.labels[0] for cell in churned] == ["Sigma Churn: 0", "Sigma Churn: 2.5"]
    with pytest.raises(RequestValidationError, match="sigma noise 1.5 is out of range"):
        plot({"x": {"type": "Sigma noise", "values": "1, 1.5"}})
    with pytest.raises(RequestValidationError, match="img2img only"):
        expand_cells(base, plot({"x": {"type": "Initial noise multiplier", "values": "0.5"}}))
