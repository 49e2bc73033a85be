"""A1111's selectable scripts through the API (pure): `script_name` + `script_args` → cells.

`/sdapi/v1/txt2img|img2img` name a script by its title (any case) and pass its arguments
positionally, in the order A1111 1.10's `ui()` returns its components (`script_args`). Each
script here turns (its arguments, the request as parsed) into a `ScriptPlan`: the cells' requests,
which the control plane submits as one job group (`inference/sdapi/scripts.py`), and the grid's
layout when there is one.

- **X/Y/Z plot** (`scripts/xyz_grid.py`): 18 arguments, `[x_type, x_values, x_values_dropdown,
  y_type, …, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
  no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode]`. An axis type
  is an index into A1111's axis list *of that tab* (txt2img and img2img lists differ: see
  `xyz_axis_labels`), or its label. The axes the workspace's plot has (`a1111/xyz.py`: seed,
  var. seed and strength, steps, hires steps, CFG scale, Prompt S/R, sampler, checkpoint name,
  schedule type, clip skip, denoising, VAE) are supported; any other is a 422 naming it. As in A1111 an axis with
  choices (sampler, checkpoint, VAE) reads the dropdown list unless `csv_mode` (here: or the list
  is empty). The images: the grid, then (with `include_lone_images`) each cell's first image.
- **Prompt matrix** (`scripts/prompt_matrix.py`): `[put_at_start, different_seeds, prompt_type,
  variations_delimiter, margin_size]`; the prompt split on `|` gives 2^(n-1) combinations, one
  image each; the grid, then every image.
- **Prompts from file or textbox** (`scripts/prompts_from_file.py`): `[checkbox_iterate,
  checkbox_iterate_batch, prompt_position, prompt_txt]`; one job per non-empty line; a line that
  starts with `--` carries A1111's options (`--prompt "…" --steps 10`); an option this platform
  does not take is a 422 naming the line and the option (A1111 would fall back to the line as a
  prompt). No grid.

Missing trailing arguments take A1111's UI defaults (`script_info`); more arguments than the
layout is a 422. `margin_size` is accepted (the grid is drawn without margins).

The table of scripts is `SCRIPTS` (one row per script; each plans the cells of one job group).
`JOB_SCRIPTS` are the scripts that change one job instead of making a group: SD upscale (img2img),
read by `a1111/sd_upscale.py` into the request itself; `find_script` answers None for them, and
`scripts_list`/`script_info` list them with the rest.
"""

from __future__ import annotations

import dataclasses
import random
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from a1111.errors import RequestValidationError
from a1111.fields import read_bool, read_float, read_int, read_str, shown_value
from a1111.generation import MAX_SEED, GenerationRequest, Limits
from a1111.prompts import PromptError, extract_extra_networks, prompt_chunk_count
from a1111.samplers import SamplerError, resolve_sampler
from a1111.sd_upscale import BUILTIN_UPSCALERS as SD_UPSCALE_BUILTIN_UPSCALERS
from a1111.sd_upscale import DEFAULT_OVERLAP as SD_UPSCALE_OVERLAP
from a1111.sd_upscale import DEFAULT_SCALE_FACTOR as SD_UPSCALE_SCALE_FACTOR
from a1111.sd_upscale import DEFAULT_UPSCALER_INDEX as SD_UPSCALE_UPSCALER_INDEX
from a1111.sd_upscale import MAX_OVERLAP as SD_UPSCALE_MAX_OVERLAP
from a1111.sd_upscale import MAX_SCALE_FACTOR as SD_UPSCALE_MAX_SCALE_FACTOR
from a1111.sd_upscale import SCRIPT_TITLE as SD_UPSCALE_TITLE
from a1111.xyz import AXIS_NAMES, NOTHING, Axis, XyzPlot, axis_type_for, expand_cells, parse_xyz

ARGS_FIELD = "script_args"


@dataclass(frozen=True)
class ScriptArg:
    """One positional argument, as `/sdapi/v1/script-info` describes it (A1111's `ScriptArg`)."""

    label: str
    value: Any
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step, "choices": list(self.choices) if self.choices is not None else None}


@dataclass(frozen=True)
class PlanContext:
    """What a plan needs besides the arguments: the deployment's limits, and the randomness."""

    limits: Limits
    max_cells: int
    random_seed: bool = False  # the request's seed was -1 (its drawn seed may be replaced per cell)
    rng: random.Random = dataclasses.field(default_factory=random.SystemRandom)


@dataclass(frozen=True)
class ScriptPlan:
    """What a script makes: its cells' requests (one job each, in order) and how they are shown."""

    title: str  # the script's name, lower-cased as `/sdapi/v1/scripts` lists it
    cells: tuple[GenerationRequest, ...]
    plot: XyzPlot | None  # the grid's shape and labels (cell order: x fastest); None: no grid
    legend: bool = True  # draw the labels on the grid
    include_cells: bool = True  # the cells' images follow the grid in the response
    include_sub_grids: bool = False  # X/Y/Z: one grid per z value after the main grid
    first_image_only: bool = False  # X/Y/Z: a cell shows its first image (A1111 takes images[0])
    # a workspace-plot error field (`xyz.x.values`, raised when the cells are submitted) → its argument
    error_fields: tuple[tuple[str, str], ...] = ()

    def field_for(self, field: str) -> str:
        """The request field an error raised for a cell's plot field stands for."""
        return dict(self.error_fields).get(field) or XYZ_FIELD_NAMES.get(field, field)

    def group_spec(self) -> dict[str, Any]:
        """What the job group stores: the plot (as the workspace's plots), the script and the grid flags."""
        plot = self.plot or XyzPlot(NOTHING, NOTHING, NOTHING)
        return {**plot.to_json(), "script": self.title, "grid": self.plot is not None, "legend": self.legend}


@dataclass(frozen=True)
class Script:
    """One row of the table: A1111's title, its argument layout per tab, and its planner."""

    title: str  # A1111's title(), e.g. "X/Y/Z plot"
    layout: Callable[[bool], tuple[ScriptArg, ...]]  # is_img2img → the arguments
    plan: Callable[[list[Any], GenerationRequest, PlanContext], ScriptPlan]

    @property
    def name(self) -> str:
        return self.title.lower()


# --- reading positional arguments ---------------------------------------------------------


def arg_field(index: int) -> str:
    return f"{ARGS_FIELD}[{index}]"


def _arguments(script_args: Any, layout: Sequence[ScriptArg], title: str) -> list[Any]:
    """The client's arguments, the missing trailing ones filled with A1111's UI defaults."""
    if script_args is None:
        script_args = []
    if not isinstance(script_args, list):
        raise RequestValidationError(ARGS_FIELD, f"must be a list: the {title} script's arguments in A1111's order")
    if len(script_args) > len(layout):
        labels = ", ".join(arg.label for arg in layout)
        raise RequestValidationError(
            ARGS_FIELD, f"the {title} script takes at most {len(layout)} arguments ({labels}), got {len(script_args)}"
        )
    return list(script_args) + [arg.value for arg in layout[len(script_args):]]


def _bool(args: list[Any], index: int, layout: Sequence[ScriptArg]) -> bool:
    try:
        return read_bool({"value": args[index]}, "value", False)
    except RequestValidationError as exc:
        raise RequestValidationError(arg_field(index), f"{layout[index].label} {exc.message}") from None


def _choice(args: list[Any], index: int, layout: Sequence[ScriptArg]) -> str:
    value, choices = args[index], layout[index].choices or ()
    if not isinstance(value, str) or value not in choices:
        raise RequestValidationError(
            arg_field(index), f"{layout[index].label} must be one of {', '.join(choices)}, got {shown_value(value)}"
        )
    return value


def _number(args: list[Any], index: int, layout: Sequence[ScriptArg]) -> float:
    arg = layout[index]
    try:
        return read_float({"value": args[index]}, "value", arg.value, arg.minimum, arg.maximum)
    except RequestValidationError as exc:
        raise RequestValidationError(arg_field(index), f"{arg.label} {exc.message}") from None


def _text(args: list[Any], index: int, layout: Sequence[ScriptArg], max_chars: int) -> str:
    try:
        return read_str({"value": args[index]}, "value", "", max_chars)
    except RequestValidationError as exc:
        raise RequestValidationError(arg_field(index), f"{layout[index].label} {exc.message}") from None


def _check_prompt(text: str, field: str, what: str, limits: Limits) -> None:
    if len(text) > limits.max_prompt_chars:
        raise RequestValidationError(field, f"{what} makes a prompt of {len(text)} characters; at most {limits.max_prompt_chars}")
    try:
        chunks = prompt_chunk_count(extract_extra_networks(text)[0])
    except PromptError:
        return  # reported with its own message when the job is submitted
    if chunks > limits.max_prompt_chunks:
        raise RequestValidationError(field, f"{what} makes at least {chunks} chunks of 75 tokens; at most {limits.max_prompt_chunks}")


def _check_cell_count(count: int, field: str, context: PlanContext) -> None:
    if count > context.max_cells:
        raise RequestValidationError(
            field, f"makes {count} images (one job each); at most {context.max_cells} are allowed (ATELIER_MAX_XYZ_CELLS)"
        )


def _wrap_seed(seed: int) -> int:
    return seed % (MAX_SEED + 1)


# --- X/Y/Z plot ---------------------------------------------------------------------------

# A1111 1.10's `axis_options`, in order, with the tab each is on ("both", "txt2img", "img2img"):
# the axis type a client sends is an index into this list filtered for its tab. Checked against
# a 1.10-era `scripts/xyz_grid.py` (Skip Early CFG and the Beta schedule axes are 1.10's).
XYZ_AXIS_OPTIONS: tuple[tuple[str, str], ...] = (
    ("Nothing", "both"), ("Seed", "both"), ("Var. seed", "both"), ("Var. strength", "both"), ("Steps", "both"),
    ("Hires steps", "txt2img"), ("CFG Scale", "both"), ("Image CFG Scale", "img2img"), ("Prompt S/R", "both"),
    ("Prompt order", "both"), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", "both"), ("Negative Guidance minimum sigma", "both"), ("Sigma Churn", "both"),
    ("Sigma min", "both"), ("Sigma max", "both"), ("Sigma noise", "both"), ("Schedule type", "both"),
    ("Schedule min sigma", "both"), ("Schedule max sigma", "both"), ("Schedule rho", "both"),
    ("Skip Early CFG", "both"), ("Beta schedule alpha", "both"), ("Beta schedule beta", "both"), ("Eta", "both"),
    ("Clip skip", "both"), ("Denoising", "both"), ("Initial noise multiplier", "both"), ("Extra noise", "both"),
    ("Hires upscaler", "txt2img"), ("Cond. Image Mask Weight", "img2img"), ("VAE", "both"), ("Styles", "both"),
    ("UniPC Order", "both"), ("Face restore", "both"), ("Token merging ratio", "both"),
    ("Token merging ratio high-res", "both"), ("Always discard next-to-last sigma", "both"),
    ("SGM noise multiplier", "both"), ("Refiner checkpoint", "both"), ("Refiner switch at", "both"),
    ("RNG source", "both"), ("FP8 mode", "both"), ("Size", "both"),
    # the DeepCache extension's axes, which it appends to A1111's (the one extension built in here)
    ("[DeepCache] Enable DeepCache for", "both"), ("[DeepCache] Cache Resnet level", "both"),
    ("[DeepCache] Cache Disable initial step percentage", "both"), ("[DeepCache] Cache Refresh Rate", "both"),
    ("[DeepCache] HR Reuse", "both"), ("[DeepCache] HR Cache Disable initial step percentage", "both"),
)
# A1111's axis label → the workspace plot's axis type (`a1111/xyz.py`); the others are refused.
XYZ_SUPPORTED_AXES: dict[str, str] = {
    "Nothing": "nothing", "Seed": "seed", "Steps": "steps", "CFG Scale": "cfg_scale", "Prompt S/R": "prompt_sr",
    "Sampler": "sampler", "Checkpoint name": "checkpoint", "VAE": "vae", "Var. seed": "subseed",
    "Var. strength": "subseed_strength", "Hires steps": "hr_steps", "Denoising": "denoising", "Clip skip": "clip_skip",
    "Schedule type": "scheduler", "Eta": "eta", "Sigma Churn": "s_churn", "Sigma min": "s_tmin", "Sigma max": "s_tmax",
    "Sigma noise": "s_noise", "Negative Guidance minimum sigma": "s_min_uncond",
    "Initial noise multiplier": "initial_noise_multiplier",
    "Token merging ratio": "token_merging_ratio", "Token merging ratio high-res": "token_merging_ratio_hr",
    "[DeepCache] Enable DeepCache for": "deepcache_enable_pass",
    "[DeepCache] Cache Resnet level": "deepcache_cache_resnet_level",
    "[DeepCache] Cache Disable initial step percentage": "deepcache_cache_enable_step_percentage",
    "[DeepCache] Cache Refresh Rate": "deepcache_full_run_step_rate",
    "[DeepCache] HR Cache Disable initial step percentage": "deepcache_cache_enable_step_percentage_hr",
}
XYZ_CHOICE_AXES = frozenset({"Sampler", "Checkpoint name", "VAE", "Schedule type", "[DeepCache] Enable DeepCache for"})  # A1111 reads their dropdown list
_XYZ_AXIS_ARGS = {name: (3 * i, 3 * i + 1, 3 * i + 2) for i, name in enumerate(AXIS_NAMES)}  # type, values, dropdown
(XYZ_DRAW_LEGEND, XYZ_INCLUDE_LONE_IMAGES, XYZ_INCLUDE_SUB_GRIDS, XYZ_NO_FIXED_SEEDS, XYZ_VARY_X, XYZ_VARY_Y,
 XYZ_VARY_Z, XYZ_MARGIN_SIZE, XYZ_CSV_MODE) = range(9, 18)


def xyz_axis_labels(is_img2img: bool) -> list[str]:
    """The axis list of a tab, as A1111's dropdown (and so its indices) has it."""
    tab = "img2img" if is_img2img else "txt2img"
    return [label for label, where in XYZ_AXIS_OPTIONS if where in ("both", tab)]


def _xyz_layout(is_img2img: bool) -> tuple[ScriptArg, ...]:
    labels = tuple(xyz_axis_labels(is_img2img))
    axes: list[ScriptArg] = []
    for name, default in zip(AXIS_NAMES, ("Seed", "Nothing", "Nothing"), strict=True):
        upper = name.upper()
        axes += [ScriptArg(f"{upper} type", default, choices=labels), ScriptArg(f"{upper} values", ""),
                 ScriptArg(f"{upper} values", [])]
    flags = ("Draw legend", True), ("Include Sub Images", False), ("Include Sub Grids", False), \
        ("Keep -1 for seeds", False), ("Vary seeds for X", False), ("Vary seeds for Y", False), ("Vary seeds for Z", False)
    return (*axes, *(ScriptArg(label, value) for label, value in flags),
            ScriptArg("Grid margins (px)", 0, 0, 500, 2), ScriptArg("Use text inputs instead of dropdowns", False))


XYZ_FIELD_NAMES = {  # the workspace plot's field → the argument it came from
    **{f"xyz.{name}.type": arg_field(t) for name, (t, _, _) in _XYZ_AXIS_ARGS.items()},
    **{f"xyz.{name}": arg_field(t) for name, (t, _, _) in _XYZ_AXIS_ARGS.items()},
    "xyz": ARGS_FIELD,
}


def xyz_field(field: str, values_field: Mapping[str, str]) -> str:
    """The `script_args[i]` a workspace-plot error field (`xyz.x.values`) stands for."""
    return values_field.get(field) or XYZ_FIELD_NAMES.get(field, ARGS_FIELD)


def _xyz_axis_type(value: Any, index: int, labels: list[str], is_img2img: bool) -> str:
    tab = "img2img" if is_img2img else "txt2img"
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(labels):
            raise RequestValidationError(
                arg_field(index), f"axis type {value} is not one of A1111's {tab} axis types (0 to {len(labels) - 1})"
            )
        label = labels[value]
    elif isinstance(value, str) and (match := next((l for l in labels if l.lower() == value.strip().lower()), None)):
        label = match
    else:
        raise RequestValidationError(
            arg_field(index), f"axis type must be an index into A1111's {tab} axis list or its label, got {shown_value(value)}"
        )
    if label not in XYZ_SUPPORTED_AXES:
        supported = ", ".join(f"{labels.index(l)} {l}" for l in labels if l in XYZ_SUPPORTED_AXES)
        raise RequestValidationError(
            arg_field(index), f"the {label!r} axis is not available here; the {tab} axes are: {supported}"
        )
    return label


def _plan_xyz(args: list[Any], base: GenerationRequest, context: PlanContext) -> ScriptPlan:
    is_img2img = base.kind == "img2img"
    layout = _xyz_layout(is_img2img)
    labels = xyz_axis_labels(is_img2img)
    csv_mode = _bool(args, XYZ_CSV_MODE, layout)
    axes: dict[str, Any] = {}
    values_field: dict[str, str] = {}
    for name, (type_index, values_index, dropdown_index) in _XYZ_AXIS_ARGS.items():
        label = _xyz_axis_type(args[type_index], type_index, labels, is_img2img)
        text, dropdown = args[values_index], args[dropdown_index]
        if dropdown is not None and not (isinstance(dropdown, list) and all(isinstance(v, str) for v in dropdown)):
            raise RequestValidationError(arg_field(dropdown_index), f"{name.upper()} values (dropdown) must be a list of strings")
        use_dropdown = label in XYZ_CHOICE_AXES and not csv_mode and bool(dropdown)
        values: Any = list(dropdown) if use_dropdown else text
        if values is None:
            values = ""
        values_field[f"xyz.{name}.values"] = arg_field(dropdown_index if use_dropdown else values_index)
        axes[name] = {"type": XYZ_SUPPORTED_AXES[label], "values": values}
    for index in (XYZ_DRAW_LEGEND, XYZ_INCLUDE_LONE_IMAGES, XYZ_INCLUDE_SUB_GRIDS, XYZ_NO_FIXED_SEEDS,
                  XYZ_VARY_X, XYZ_VARY_Y, XYZ_VARY_Z):
        _bool(args, index, layout)
    _number(args, XYZ_MARGIN_SIZE, layout)
    if all(axis["type"] == "nothing" for axis in axes.values()):  # A1111 makes one cell: so do we
        plot = XyzPlot(NOTHING, NOTHING, NOTHING)
    else:
        try:
            plot = parse_xyz({k: v for k, v in axes.items() if v["type"] != "nothing"}, limits=context.limits,
                             max_cells=context.max_cells, rng=context.rng)
        except RequestValidationError as exc:
            raise RequestValidationError(xyz_field(exc.field, values_field), exc.message) from None
    try:
        cells = expand_cells(base, plot, context.limits)
    except RequestValidationError as exc:
        raise RequestValidationError(xyz_field(exc.field, values_field), exc.message) from None
    nx, ny, _ = plot.shape
    keep_random = _bool(args, XYZ_NO_FIXED_SEEDS, layout) and context.random_seed and plot.x.type.id != "seed" \
        and plot.y.type.id != "seed" and plot.z.type.id != "seed"
    vary = (_bool(args, XYZ_VARY_X, layout), _bool(args, XYZ_VARY_Y, layout), _bool(args, XYZ_VARY_Z, layout))
    requests = []
    for cell in cells:
        request = cell.request
        if keep_random:  # "Keep -1 for seeds": every cell draws its own
            request = dataclasses.replace(request, seed=context.rng.randrange(MAX_SEED))
        xi, yi, zi = cell.position
        offset = (xi if vary[0] else 0) + (yi * nx if vary[1] else 0) + (zi * nx * ny if vary[2] else 0)
        if offset:
            request = dataclasses.replace(request, seed=_wrap_seed(request.seed + offset))
        requests.append(request)
    return ScriptPlan(
        title="x/y/z plot", cells=tuple(requests), plot=plot, legend=_bool(args, XYZ_DRAW_LEGEND, layout),
        include_cells=_bool(args, XYZ_INCLUDE_LONE_IMAGES, layout),
        include_sub_grids=_bool(args, XYZ_INCLUDE_SUB_GRIDS, layout), first_image_only=True,
        error_fields=tuple(values_field.items()),
    )


# --- Prompt matrix ------------------------------------------------------------------------


def _prompt_matrix_layout(is_img2img: bool) -> tuple[ScriptArg, ...]:
    return (
        ScriptArg("Set at prompt start", False), ScriptArg("Random seeds", False),
        ScriptArg("Prompt type", "positive", choices=("positive", "negative")),
        ScriptArg("Joining char", "comma", choices=("comma", "space")),
        ScriptArg("Grid margins", 0, 0, 500, 2),
    )


def prompt_matrix_prompts(prompt: str, *, put_at_start: bool, delimiter: str) -> list[str]:
    """A1111's combinations: the first part always, then each subset of the others (bit n: part n+1)."""
    parts = prompt.split("|")
    prompts = []
    for number in range(2 ** (len(parts) - 1)):
        chosen = [text.strip().strip(",") for n, text in enumerate(parts[1:]) if number & (1 << n)]
        prompts.append(delimiter.join([*chosen, parts[0]] if put_at_start else [parts[0], *chosen]))
    return prompts


def _matrix_axis(parts: list[str], delimiter: str) -> Axis:
    """A grid axis over `parts`: one column (or row) per subset, labelled with the parts it has."""
    labels = tuple(delimiter.join(p.strip().strip(",") for n, p in enumerate(parts) if pos & (1 << n))
                   for pos in range(1 << len(parts)))
    if len(labels) == 1:
        return NOTHING
    xyz_type = axis_type_for("prompt_sr")
    assert xyz_type is not None
    return Axis(xyz_type, labels, labels)


def _plan_prompt_matrix(args: list[Any], base: GenerationRequest, context: PlanContext) -> ScriptPlan:
    layout = _prompt_matrix_layout(base.kind == "img2img")
    put_at_start, different_seeds = _bool(args, 0, layout), _bool(args, 1, layout)
    prompt_type, joining = _choice(args, 2, layout), _choice(args, 3, layout)
    _number(args, 4, layout)
    delimiter = ", " if joining == "comma" else " "
    field = "prompt" if prompt_type == "positive" else "negative_prompt"
    original = base.prompt if prompt_type == "positive" else base.negative_prompt
    parts = original.split("|")
    _check_cell_count(2 ** (len(parts) - 1), field, context)
    prompts = prompt_matrix_prompts(original, put_at_start=put_at_start, delimiter=delimiter)
    cells = []
    for number, prompt in enumerate(prompts):
        _check_prompt(prompt, field, "a combination", context.limits)
        cells.append(dataclasses.replace(
            base, **{field: prompt}, batch_size=1, n_iter=1,
            seed=_wrap_seed(base.seed + (number if different_seeds else 0)),
        ))
    others = parts[1:]
    boundary = (len(others) + 1) // 2  # A1111: the first half across, the rest down
    plot = XyzPlot(_matrix_axis(others[:boundary], delimiter), _matrix_axis(others[boundary:], delimiter), NOTHING)
    return ScriptPlan(title="prompt matrix", cells=tuple(cells), plot=plot)


# --- Prompts from file or textbox ---------------------------------------------------------


def _prompts_layout(is_img2img: bool) -> tuple[ScriptArg, ...]:
    return (
        ScriptArg("Iterate seed every line", False), ScriptArg("Use same random seed for all lines", False),
        ScriptArg("Insert prompts at the", "start", choices=("start", "end")), ScriptArg("List of prompt inputs", ""),
    )


# A1111's line options that have no effect on this platform (accepted, as A1111 accepts them)
_IGNORED_OPTIONS = frozenset({"do_not_save_samples", "do_not_save_grid", "prompt_for_display",
                              "seed_resize_from_h", "seed_resize_from_w"})
# A1111's line options refused here, with what to do instead
_REFUSED_OPTIONS = {
    "outpath_samples": "outputs go to your working directory; server folders cannot be chosen",
    "outpath_grids": "outputs go to your working directory; server folders cannot be chosen",
    "styles": "name styles in the request's `styles` instead",
    "sampler_index": "use --sampler_name",
}
_LINE_OPTIONS = ("prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "sampler_name", "steps",
                 "cfg_scale", "width", "height", "batch_size", "n_iter", "restore_faces", "tiling", "sd_model")


def parse_prompt_line(line: str) -> dict[str, str]:
    """A1111's `cmdargs`: `--option value` pairs; `--prompt`/`--negative_prompt` take every word
    up to the next option. Raises `ValueError` naming the option at fault."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"cannot be read as options: {exc}") from None
    options: dict[str, str] = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise ValueError(f"{word!r} must start with --")
        if pos + 1 >= len(words):
            raise ValueError(f"{word} has no value")
        tag = word[2:]
        if tag in ("prompt", "negative_prompt"):
            pos += 1
            text = [words[pos]]
            pos += 1
            while pos < len(words) and not words[pos].startswith("--"):
                text.append(words[pos])
                pos += 1
            options[tag] = " ".join(text)
            continue
        if tag in _REFUSED_OPTIONS:
            raise ValueError(f"{word} is not taken here: {_REFUSED_OPTIONS[tag]}")
        if tag not in _LINE_OPTIONS and tag not in _IGNORED_OPTIONS:
            raise ValueError(f"unknown option {word}; the options are --{', --'.join(_LINE_OPTIONS)}")
        options[tag] = words[pos + 1]
        pos += 2
    return options


def _line_request(
    base: GenerationRequest, options: dict[str, str], position: str, limits: Limits
) -> GenerationRequest:
    """`base` with one line's options applied (checked as the request's own fields are)."""
    changes: dict[str, Any] = {}
    int_fields = {"seed": (-1, MAX_SEED), "subseed": (-1, MAX_SEED), "steps": (1, limits.max_steps),
                  "batch_size": (1, limits.max_batch_size), "n_iter": (1, limits.max_n_iter),
                  "width": (limits.min_size, limits.max_size), "height": (limits.min_size, limits.max_size)}
    for tag, (lo, hi) in int_fields.items():
        if tag in options:
            changes[tag] = read_int(options, tag, 0, lo, hi)
    for name in ("width", "height"):
        if name in changes:
            changes[name] = changes[name] // 8 * 8
    if "cfg_scale" in options:
        changes["cfg_scale"] = read_float(options, "cfg_scale", 7.0, 0.0, 30.0)
    if "subseed_strength" in options:
        changes["subseed_strength"] = read_float(options, "subseed_strength", 0.0, 0.0, 1.0) if base.kind == "txt2img" else 0.0
    for tag in ("restore_faces", "tiling"):
        if tag in options:
            changes[tag] = options[tag] == "true"  # A1111: anything but "true" is false
    if "sampler_name" in options:
        try:
            choice = resolve_sampler(options["sampler_name"], base.scheduler)
        except SamplerError as exc:
            raise RequestValidationError("sampler_name", str(exc)) from None
        changes.update(sampler_name=choice.name, scheduler=choice.schedule_label)
    if "sd_model" in options:
        changes.update(checkpoint=options["sd_model"],
                       override_settings={**base.override_settings, "sd_model_checkpoint": options["sd_model"]})
    for name in ("prompt", "negative_prompt"):
        text, own = options.get(name), getattr(base, name)
        if text and own:
            text = f"{text} {own}" if position == "start" else f"{own} {text}"
        if text:
            _check_prompt(text, name, "the line", limits)
            changes[name] = text
    return dataclasses.replace(base, **changes)


def _plan_prompts_from_file(args: list[Any], base: GenerationRequest, context: PlanContext) -> ScriptPlan:
    layout = _prompts_layout(base.kind == "img2img")
    iterate, same_seed = _bool(args, 0, layout), _bool(args, 1, layout)
    position = _choice(args, 2, layout)
    text = _text(args, 3, layout, context.limits.max_prompt_chars * max(context.max_cells, 1))
    lines = [line for line in (raw.strip() for raw in text.splitlines()) if line]
    if not lines:
        raise RequestValidationError(arg_field(3), "List of prompt inputs has no lines: one prompt (or --options) per line")
    _check_cell_count(len(lines), arg_field(3), context)
    seed = base.seed
    cells = []
    for number, line in enumerate(lines, start=1):
        try:
            options = parse_prompt_line(line) if line.startswith("--") else {"prompt": line}
        except ValueError as exc:
            raise RequestValidationError(arg_field(3), f"line {number} ({shown_value(line, 60)}): {exc}") from None
        # Each line is its own generation: without a fixed seed each draws its own, as in A1111.
        line_base = dataclasses.replace(base, seed=seed) if (iterate or same_seed or not context.random_seed) \
            else dataclasses.replace(base, seed=context.rng.randrange(MAX_SEED))
        try:
            request = _line_request(line_base, options, position, context.limits)
        except RequestValidationError as exc:
            raise RequestValidationError(
                arg_field(3), f"line {number} ({shown_value(line, 60)}): --{exc.field} {exc.message}"
            ) from None
        if request.seed == -1:
            request = dataclasses.replace(request, seed=context.rng.randrange(MAX_SEED))
        cells.append(request)
        if iterate:
            seed = _wrap_seed(seed + base.batch_size * base.n_iter)
    return ScriptPlan(title="prompts from file or textbox", cells=tuple(cells), plot=None)


# --- the table ----------------------------------------------------------------------------

SCRIPTS: dict[str, Script] = {
    script.name: script
    for script in (
        Script("Prompt matrix", _prompt_matrix_layout, _plan_prompt_matrix),
        Script("Prompts from file or textbox", _prompts_layout, _plan_prompts_from_file),
        Script("X/Y/Z plot", _xyz_layout, _plan_xyz),
    )
}
# Scripts that change one job (not a group), img2img only: title → argument layout.
JOB_SCRIPTS: dict[str, tuple[str, tuple[ScriptArg, ...]]] = {
    SD_UPSCALE_TITLE.lower(): (SD_UPSCALE_TITLE, (
        ScriptArg("Will upscale the image by the selected scale factor; use width and height sliders to set tile size", None),
        ScriptArg("Tile overlap", SD_UPSCALE_OVERLAP, 0, SD_UPSCALE_MAX_OVERLAP, 16),
        ScriptArg("Upscaler", SD_UPSCALE_UPSCALER_INDEX, choices=SD_UPSCALE_BUILTIN_UPSCALERS),
        ScriptArg("Scale Factor", SD_UPSCALE_SCALE_FACTOR, 1.0, SD_UPSCALE_MAX_SCALE_FACTOR, 0.05),
    )),
}


def find_script(script_name: Any) -> Script | None:
    """The script `script_name` names (any case), None for none or a pending one; a 422 for an unknown one."""
    if script_name is None or script_name == "":
        return None
    if not isinstance(script_name, str):
        raise RequestValidationError("script_name", f"must be a string, got {type(script_name).__name__}")
    name = script_name.strip().lower()
    if name in JOB_SCRIPTS:
        return None
    script = SCRIPTS.get(name)
    if script is None:
        raise RequestValidationError("script_name", f"script {script_name!r} not found; the scripts are: {', '.join(SCRIPTS)}")
    return script


def check_script_args(script_args: Any) -> None:
    """`script_args` is a list whether or not a script is named (A1111's model says so)."""
    if script_args is not None and not isinstance(script_args, list):
        raise RequestValidationError(ARGS_FIELD, "must be a list: the script's arguments in A1111's order")


def check_alwayson_scripts(alwayson: Any) -> None:
    """A selectable script in `alwayson_scripts` is a 422, as in A1111."""
    if not isinstance(alwayson, Mapping):
        return
    for key in alwayson:
        if isinstance(key, str) and key.strip().lower() in (*SCRIPTS, *JOB_SCRIPTS):
            raise RequestValidationError(
                f"alwayson_scripts.{key}", "is a selectable script: name it in script_name and pass its script_args"
            )


def plan_script(script: Script, script_args: Any, base: GenerationRequest, context: PlanContext) -> ScriptPlan:
    """The cells `script` makes of `base` with `script_args` (A1111's positional layout)."""
    layout = script.layout(base.kind == "img2img")
    return script.plan(_arguments(script_args, layout, script.title), base, context)


def script_info() -> list[dict[str, Any]]:
    """`/sdapi/v1/script-info`: each script per tab with its arguments, as A1111 lists them."""
    groups = [
        {"name": script.name, "is_alwayson": False, "is_img2img": is_img2img,
         "args": [arg.to_json() for arg in script.layout(is_img2img)]}
        for is_img2img in (False, True)
        for script in SCRIPTS.values()
    ]
    jobs = [
        {"name": name, "is_alwayson": False, "is_img2img": True, "args": [arg.to_json() for arg in layout]}
        for name, (_title, layout) in JOB_SCRIPTS.items()
    ]
    return [*groups, *jobs]


def scripts_list() -> dict[str, list[str]]:
    """`/sdapi/v1/scripts`: the selectable scripts' names per tab, then the always-on "controlnet"."""
    names = sorted(SCRIPTS)
    return {"txt2img": [*names, "controlnet"], "img2img": [*sorted([*names, *JOB_SCRIPTS]), "controlnet"]}
