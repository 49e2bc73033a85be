"""The X/Y/Z plot script's vocabulary (pure): axis types, A1111's value syntax, and the cells.

A plot is up to three axes over one base `GenerationRequest`. Each axis has a type (seed,
steps, CFG scale, sampler, checkpoint, VAE, prompt S/R, LoRA weight, variation seed and
strength, hires steps, denoising, clip skip, schedule type, or nothing) and values in
A1111's syntax (`scripts/xyz_grid.py`):

- a comma list, quoted like CSV where a value holds a comma: `Euler a, "DPM++ 2M, Karras"`;
- for number axes, ranges: `1-5` (step 1), `1-5 (+2)`, `10-1 (-3)`, and `1-10 [5]` (five values
  spread evenly, ends included); floats likewise (`0.5-1.5 (+0.25)`, `3-7 [3]`);
- Prompt S/R: the first value is searched for; each value replaces it in the prompt and the
  negative prompt (so the first cell is the prompt as written). The search text must occur.

`parse_xyz` checks the axes (a `RequestValidationError` naming `xyz.<axis>.values`, and the
cell limit the caller passes); `expand_cells` makes the cells' requests in A1111's order (x
fastest, then y, then z) with their labels. The control plane submits each cell as an ordinary
job (`inference/job_groups.py`); the grid is drawn by `a1111/xyz_grid.py`. Both the native API
(`/api/v1/job-groups`) and `/sdapi/v1`'s `script_name: "x/y/z plot"` (`a1111/scripts.py`) use this.
"""

from __future__ import annotations

import csv
import dataclasses
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Any

from a1111.deepcache import DEEPCACHE_PASSES, MAX_FULL_RUN_STEP_RATE, MAX_RESNET_LEVEL
from a1111.errors import RequestValidationError
from a1111.generation import MAX_SEED, MAX_TOKEN_MERGING_RATIO, SIGMA_PARAMETERS, GenerationRequest, Limits
from a1111.prompts import MAX_NETWORK_WEIGHT
from a1111.samplers import SamplerError, resolve_sampler, sampler_parameters

AXIS_NAMES = ("x", "y", "z")
MAX_VALUES_CHARS = 10_000  # the text of one axis's values
MAX_CFG_SCALE = 30.0  # the parser's own bound (`a1111/generation.py`)


@dataclass(frozen=True)
class AxisType:
    id: str  # what the API takes: "steps"
    label: str  # A1111's name in its dropdown: "Steps"
    value_kind: str  # "int", "float", "str" or "none"
    labelled: bool  # the cell label is "Steps: 20" (A1111's format_value_add_label), else the value alone


AXIS_TYPES: tuple[AxisType, ...] = (
    AxisType("nothing", "Nothing", "none", False),
    AxisType("seed", "Seed", "int", True),
    AxisType("steps", "Steps", "int", True),
    AxisType("cfg_scale", "CFG Scale", "float", True),
    AxisType("sampler", "Sampler", "str", False),
    AxisType("checkpoint", "Checkpoint name", "str", False),
    AxisType("vae", "VAE", "str", False),
    AxisType("prompt_sr", "Prompt S/R", "str", False),
    AxisType("lora_weight", "LoRA weight", "float", True),
    AxisType("subseed", "Var. seed", "int", True),
    AxisType("subseed_strength", "Var. strength", "float", True),
    AxisType("hr_steps", "Hires steps", "int", True),
    AxisType("denoising", "Denoising", "float", True),
    AxisType("clip_skip", "Clip skip", "int", True),
    AxisType("scheduler", "Schedule type", "str", True),
    AxisType("eta", "Eta", "float", True),
    AxisType("s_churn", "Sigma Churn", "float", True),
    AxisType("s_tmin", "Sigma min", "float", True),
    AxisType("s_tmax", "Sigma max", "float", True),
    AxisType("s_noise", "Sigma noise", "float", True),
    AxisType("s_min_uncond", "Negative Guidance minimum sigma", "float", True),
    AxisType("initial_noise_multiplier", "Initial noise multiplier", "float", True),
    AxisType("token_merging_ratio", "Token merging ratio", "float", True),
    AxisType("token_merging_ratio_hr", "Token merging ratio high-res", "float", True),
    # the DeepCache extension's axes (`a1111/deepcache.py`), with its labels
    AxisType("deepcache_enable_pass", "[DeepCache] Enable DeepCache for", "str", True),
    AxisType("deepcache_cache_resnet_level", "[DeepCache] Cache Resnet level", "int", True),
    AxisType("deepcache_cache_enable_step_percentage", "[DeepCache] Cache Disable initial step percentage", "float", True),
    AxisType("deepcache_full_run_step_rate", "[DeepCache] Cache Refresh Rate", "int", True),
    AxisType("deepcache_cache_enable_step_percentage_hr", "[DeepCache] HR Cache Disable initial step percentage", "float", True),
)
# The DeepCache axes' bounds (the extension's sliders and `a1111.deepcache.parse_deepcache_options`)
DEEPCACHE_AXES: dict[str, tuple[float, float]] = {
    "deepcache_cache_resnet_level": (0, MAX_RESNET_LEVEL),
    "deepcache_cache_enable_step_percentage": (0.0, 1.0),
    "deepcache_full_run_step_rate": (0, MAX_FULL_RUN_STEP_RATE),
    "deepcache_cache_enable_step_percentage_hr": (0.0, 1.0),
}
MAX_CLIP_SKIP = 12  # the parser's own bound (`a1111/generation.py`)
AXIS_TYPE_IDS = tuple(axis_type.id for axis_type in AXIS_TYPES)
# The sampler parameters' axes and their bounds (those of `a1111.generation.parse_sampler_parameters`).
SAMPLER_PARAMETER_AXES: dict[str, tuple[float, float]] = {
    "eta": (0.0, 1.0), **{name: bounds[1:] for name, bounds in SIGMA_PARAMETERS.items()},
}
_BY_ID = {axis_type.id: axis_type for axis_type in AXIS_TYPES}
_BY_LABEL = {axis_type.label.lower(): axis_type for axis_type in AXIS_TYPES}

_NUM = r"[+-]?\s*\d+(?:\.\d*)?"
RE_INT_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RE_INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)\s*\[(\d+)\s*\]\s*")
RE_FLOAT_RANGE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RE_FLOAT_COUNT = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*\[(\d+)\s*\]\s*")
RE_LORA_TAG = re.compile(r"<(lora|lyco):([^>]+)>")
MAX_RANGE_VALUES = 1000  # a range longer than this is refused before it is built


@dataclass(frozen=True)
class Axis:
    type: AxisType
    values: tuple[Any, ...]  # parsed: ints, floats or strings; (None,) for "nothing"
    labels: tuple[str, ...]  # one per value ("" for "nothing")
    lora: str | None = None  # lora_weight: only this LoRA's tags (None: every <lora:…> tag)
    values_text: str = ""  # as the client wrote it (stored with the group, shown again)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class XyzPlot:
    x: Axis
    y: Axis
    z: Axis

    @property
    def axes(self) -> tuple[Axis, Axis, Axis]:
        return (self.x, self.y, self.z)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.x), len(self.y), len(self.z))

    @property
    def cell_count(self) -> int:
        nx, ny, nz = self.shape
        return nx * ny * nz

    def cell_labels(self, index: int) -> tuple[str, str, str]:
        """The x, y and z labels of cell `index` (A1111's order: x fastest, then y, then z)."""
        nx, ny, _ = self.shape
        return (self.x.labels[index % nx], self.y.labels[index // nx % ny], self.z.labels[index // (nx * ny)])

    def to_json(self) -> dict[str, Any]:
        """The axes as stored with the group (parsed values: a stored plot is never re-parsed)."""
        return {
            name: {"type": axis.type.id, "values": list(axis.values), "labels": list(axis.labels),
                   "lora": axis.lora, "values_text": axis.values_text}
            for name, axis in zip(AXIS_NAMES, self.axes, strict=True)
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> XyzPlot:
        def axis(name: str) -> Axis:
            item = data.get(name) or {}
            if not item or item.get("type", "nothing") == "nothing":
                return NOTHING
            return Axis(_BY_ID[item["type"]], tuple(item["values"]), tuple(item["labels"]), item.get("lora"),
                        item.get("values_text", ""))

        return cls(axis("x"), axis("y"), axis("z"))


NOTHING = Axis(_BY_ID["nothing"], (None,), ("",))


@dataclass(frozen=True)
class Cell:
    index: int  # A1111's order: x fastest, then y, then z
    position: tuple[int, int, int]  # (x, y, z) indexes
    labels: tuple[str, str, str]
    request: GenerationRequest


def axis_type_for(name: str) -> AxisType | None:
    """An axis type by its id (`cfg_scale`) or A1111's label (`CFG Scale`), any case."""
    text = name.strip().lower()
    return _BY_ID.get(text) or _BY_LABEL.get(text)


def split_values(text: str) -> list[str]:
    """A1111's value list: CSV with spaces after commas skipped, each value stripped, empties dropped."""
    return [value.strip() for row in csv.reader(StringIO(text), skipinitialspace=True) for value in row if value.strip()]


def _int(text: str) -> int:
    return int(text.replace(" ", ""))


def _float(text: str) -> float:
    return float(text.replace(" ", ""))


def _check_range_length(count: int, where: str, text: str) -> None:
    if count > MAX_RANGE_VALUES:
        raise RequestValidationError(where, f"the range {text!r} makes {count} values; at most {MAX_RANGE_VALUES}")


def parse_int_values(values: Sequence[str], where: str) -> list[int]:
    """Integers, with A1111's ranges `1-5`, `1-5 (+2)`, `10-1 (-3)` and `1-10 [5]` (ends included)."""
    result: list[int] = []
    for text in values:
        if m := RE_INT_COUNT.fullmatch(text):
            start, end, count = _int(m.group(1)), _int(m.group(2)), int(m.group(3))
            _check_range_length(count, where, text)
            if count < 1:
                raise RequestValidationError(where, f"{text!r}: the count in [ ] must be at least 1")
            # np.linspace(start, end, count).astype(int) without numpy's float steps: ends included
            result.extend(int(start + (end - start) * i / (count - 1)) if count > 1 else start for i in range(count))
        elif m := RE_INT_RANGE.fullmatch(text):
            start, end = _int(m.group(1)), _int(m.group(2))
            step = int(m.group(3)) if m.group(3) is not None else (1 if end >= start else -1)
            if step == 0 or (end - start) * step < 0:
                raise RequestValidationError(where, f"{text!r}: the step {step:+d} never gets from {start} to {end}")
            _check_range_length(abs(end - start) // abs(step) + 1, where, text)
            result.extend(range(start, end + (1 if step > 0 else -1), step))
        else:
            try:
                result.append(_int(text))
            except ValueError:
                raise RequestValidationError(where, f"{text!r} is not an integer or a range like 1-5, 1-5 (+2) or 1-10 [5]") from None
    return result


def parse_float_values(values: Sequence[str], where: str) -> list[float]:
    """Numbers, with A1111's ranges `0.5-1.5 (+0.25)`, `3-7 [3]` (ends included), like integers."""
    result: list[float] = []
    for text in values:
        if m := RE_FLOAT_COUNT.fullmatch(text):
            start, end, count = _float(m.group(1)), _float(m.group(2)), int(m.group(3))
            _check_range_length(count, where, text)
            if count < 1:
                raise RequestValidationError(where, f"{text!r}: the count in [ ] must be at least 1")
            result.extend(round(start + (end - start) * i / (count - 1), 8) if count > 1 else start for i in range(count))
        elif m := RE_FLOAT_RANGE.fullmatch(text):
            start, end = _float(m.group(1)), _float(m.group(2))
            step = _float(m.group(3)) if m.group(3) is not None else (1.0 if end >= start else -1.0)
            if step == 0 or (end - start) * step < 0:
                raise RequestValidationError(where, f"{text!r}: the step {step:+g} never gets from {start:g} to {end:g}")
            count = int(round((end - start) / step, 8)) + 1
            _check_range_length(count, where, text)
            result.extend(round(start + i * step, 8) for i in range(count))
        else:
            try:
                number = float(text)
            except ValueError:
                raise RequestValidationError(where, f"{text!r} is not a number or a range like 1-2 (+0.5) or 3-7 [3]") from None
            result.append(number)
    return result


def _format_number(value: float | int) -> str:
    if isinstance(value, float):
        value = round(value, 8)
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _label(axis_type: AxisType, value: Any) -> str:
    shown = _format_number(value) if axis_type.value_kind in ("int", "float") else str(value)
    return f"{axis_type.label}: {shown}" if axis_type.labelled else shown


def _in_range(values: list, lo: float, hi: float, where: str, what: str) -> None:
    for value in values:
        if not lo <= value <= hi:
            raise RequestValidationError(where, f"{what} {_format_number(value)} is out of range: {_format_number(lo)} to {_format_number(hi)}")


def parse_axis(
    data: Any, name: str, *, limits: Limits, rng: random.Random | None = None
) -> Axis:
    """One axis of `xyz` (`{"type", "values"}`, and `lora` for a LoRA-weight axis); absent: nothing."""
    where = f"xyz.{name}"
    if data is None:
        return NOTHING
    if not isinstance(data, Mapping):
        raise RequestValidationError(where, 'must be an object like {"type": "steps", "values": "10,20"}')
    type_name = data.get("type", "nothing")
    if not isinstance(type_name, str) or (axis_type := axis_type_for(type_name)) is None:
        raise RequestValidationError(f"{where}.type", f"must be one of {', '.join(AXIS_TYPE_IDS)}, got {type_name!r}")
    if axis_type.id == "nothing":
        return NOTHING
    raw = data.get("values")
    where_values = f"{where}.values"
    if isinstance(raw, list):  # a JSON list: each element one value (no ranges)
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in raw):
            raise RequestValidationError(where_values, "must be a string like A1111's (1-5, 7) or a list of numbers or strings")
        texts = [str(v).strip() for v in raw if str(v).strip()]
        text = ", ".join(texts)
    elif isinstance(raw, str):
        if len(raw) > MAX_VALUES_CHARS:
            raise RequestValidationError(where_values, f"must be at most {MAX_VALUES_CHARS} characters, got {len(raw)}")
        text = raw
        try:
            texts = split_values(raw)
        except csv.Error as exc:
            raise RequestValidationError(where_values, f"is not a valid comma-separated list: {exc}") from None
    else:
        raise RequestValidationError(where_values, "required: a comma-separated list, e.g. 10, 20, 30 or 1-5 (+2)")
    if not texts:
        raise RequestValidationError(where_values, f"no values for the {axis_type.label} axis")
    values: list[Any]
    if axis_type.value_kind == "int":
        values = parse_int_values(texts, where_values)
    elif axis_type.value_kind == "float":
        values = parse_float_values(texts, where_values)
    else:
        values = texts
    if not values:
        raise RequestValidationError(where_values, f"no values for the {axis_type.label} axis")
    values = _checked_values(axis_type, values, where_values, limits, rng)
    lora = data.get("lora")
    if lora is not None and (axis_type.id != "lora_weight" or not isinstance(lora, str) or not lora.strip()):
        raise RequestValidationError(f"{where}.lora", "only a LoRA-weight axis takes `lora`: the name of a LoRA in the prompt")
    return Axis(axis_type, tuple(values), tuple(_label(axis_type, v) for v in values), lora.strip() if lora else None, text)


def _checked_values(axis_type: AxisType, values: list[Any], where: str, limits: Limits, rng: random.Random | None) -> list[Any]:
    if axis_type.id in ("seed", "subseed"):
        _in_range(values, -1, MAX_SEED, where, axis_type.label.lower())
        rng = rng or random.SystemRandom()
        return [rng.randrange(MAX_SEED) if v == -1 else v for v in values]  # A1111 fixes -1 once per plot
    if axis_type.id == "steps":
        _in_range(values, 1, limits.max_steps, where, "steps")
    elif axis_type.id == "hr_steps":
        _in_range(values, 0, limits.max_steps, where, "hires steps")
    elif axis_type.id in ("subseed_strength", "denoising"):
        _in_range(values, 0.0, 1.0, where, axis_type.label.lower())
    elif axis_type.id == "clip_skip":
        _in_range(values, 1, MAX_CLIP_SKIP, where, "clip skip")
    elif axis_type.id in SAMPLER_PARAMETER_AXES:
        lo, hi = SAMPLER_PARAMETER_AXES[axis_type.id]
        _in_range(values, lo, hi, where, axis_type.label.lower())
    elif axis_type.id in ("token_merging_ratio", "token_merging_ratio_hr"):
        _in_range(values, 0.0, MAX_TOKEN_MERGING_RATIO, where, axis_type.label.lower())
    elif axis_type.id in DEEPCACHE_AXES:
        lo, hi = DEEPCACHE_AXES[axis_type.id]
        _in_range(values, lo, hi, where, axis_type.label.lower())
    elif axis_type.id == "deepcache_enable_pass":
        for value in values:
            if value not in DEEPCACHE_PASSES:
                raise RequestValidationError(where, f"{value!r:.40} is not one of {', '.join(DEEPCACHE_PASSES)}")
    elif axis_type.id == "scheduler":
        labels = []
        for value in values:
            try:
                labels.append(resolve_sampler("Euler", value).schedule_label)
            except SamplerError as exc:
                raise RequestValidationError(where, f"{value!r}: {exc}") from None
        return labels
    elif axis_type.id == "cfg_scale":
        _in_range(values, 0.0, MAX_CFG_SCALE, where, "CFG scale")
    elif axis_type.id == "lora_weight":
        _in_range(values, -MAX_NETWORK_WEIGHT, MAX_NETWORK_WEIGHT, where, "LoRA weight")
    elif axis_type.id == "sampler":
        names = []
        for value in values:
            try:
                choice = resolve_sampler(value)
            except SamplerError as exc:
                raise RequestValidationError(where, f"{value!r}: {exc}") from None
            # A legacy "DPM++ 2M SDE Karras" keeps its schedule (applied with the sampler); else the name
            names.append(value if choice.schedule_label != "Automatic" else choice.name)
        return names
    elif axis_type.id in ("checkpoint", "vae", "prompt_sr"):
        for value in values:
            if len(value) > limits.max_prompt_chars:
                raise RequestValidationError(where, f"a value is longer than {limits.max_prompt_chars} characters")
    return values


def parse_xyz(data: Any, *, limits: Limits, max_cells: int, rng: random.Random | None = None) -> XyzPlot:
    """The `xyz` object of a request: `{"x": axis, "y": axis, "z": axis}` (y and z optional).

    A plot of more than `max_cells` cells (the deployment's `ATELIER_MAX_XYZ_CELLS`) is refused.
    """
    if not isinstance(data, Mapping):
        raise RequestValidationError("xyz", 'must be an object: {"x": {"type": "seed", "values": "1-4"}, "y": …}')
    unknown = sorted(set(data) - set(AXIS_NAMES))
    if unknown:
        raise RequestValidationError(f"xyz.{unknown[0]}", "unknown axis: use x, y and z")
    plot = XyzPlot(*(parse_axis(data.get(name), name, limits=limits, rng=rng) for name in AXIS_NAMES))
    if all(axis is NOTHING for axis in plot.axes):
        raise RequestValidationError("xyz.x", "a plot needs at least one axis with values")
    if plot.cell_count > max_cells:
        nx, ny, nz = plot.shape
        raise RequestValidationError(
            "xyz", f"{nx}×{ny}×{nz} = {plot.cell_count} cells; at most {max_cells} are allowed (ATELIER_MAX_XYZ_CELLS)"
        )
    return plot


def replace_lora_weight(prompt: str, weight: float, lora: str | None = None) -> tuple[str, int]:
    """The prompt with each `<lora:name:…>` tag's weights set to `weight` (only `lora`'s tags if
    named); named arguments other than te/unet (e.g. dyn) are kept. Returns (prompt, tags changed)."""
    changed = 0
    shown = _format_number(weight)

    def sub(match: re.Match[str]) -> str:
        nonlocal changed
        items = match.group(2).split(":")
        if lora is not None and items[0].strip() != lora:
            return match.group(0)
        changed += 1
        named = [item for item in items[1:] if item.count("=") == 1 and item.split("=")[0] not in ("te", "unet")]
        return f"<{match.group(1)}:{items[0]}:{shown}{''.join(':' + item for item in named)}>"

    return RE_LORA_TAG.sub(sub, prompt), changed


def apply_axis_value(request: GenerationRequest, axis: Axis, value: Any, where: str) -> GenerationRequest:
    """The request with one axis value applied (A1111's `apply_*` functions)."""
    kind = axis.type.id
    if kind == "nothing":
        return request
    if kind == "seed":
        return dataclasses.replace(request, seed=int(value))
    if kind == "steps":
        return dataclasses.replace(request, steps=int(value))
    if kind == "subseed":
        return dataclasses.replace(request, subseed=int(value))
    if kind == "subseed_strength":
        if request.kind != "txt2img":
            raise RequestValidationError(where, "variation strength applies to txt2img only")
        return dataclasses.replace(request, subseed_strength=float(value))
    if kind == "hr_steps":
        return dataclasses.replace(request, hr_second_pass_steps=int(value))
    if kind == "denoising":
        return dataclasses.replace(request, denoising_strength=float(value))
    if kind == "clip_skip":
        return dataclasses.replace(request, clip_skip=int(value))
    if kind in ("token_merging_ratio", "token_merging_ratio_hr"):
        # A1111 sets the option in override_settings: on img2img, when not 0, it wins over token_merging_ratio_img2img
        settings = {**request.override_settings, kind: float(value)}
        if kind == "token_merging_ratio":
            img2img = 0.0 if value else request.token_merging_ratio_img2img
            return dataclasses.replace(
                request, token_merging_ratio=float(value), token_merging_ratio_img2img=img2img, override_settings=settings
            )
        return dataclasses.replace(request, token_merging_ratio_hr=float(value), override_settings=settings)
    if kind == "deepcache_enable_pass" or kind in DEEPCACHE_AXES:
        # the extension's axes set its option; "disable" turns the earlier release's switch off too
        value = str(value) if kind == "deepcache_enable_pass" else value
        settings = {**request.override_settings, kind: value}
        extra = {"deepcache_enable": False} if value == "disable" else {}
        return dataclasses.replace(request, **{kind: value}, **extra, override_settings={**settings, **extra})
    if kind == "scheduler":
        choice = resolve_sampler(request.sampler_name, str(value))
        return dataclasses.replace(request, sampler_name=choice.name, scheduler=choice.schedule_label)
    if kind == "cfg_scale":
        return dataclasses.replace(request, cfg_scale=float(value))
    if kind == "initial_noise_multiplier":
        if request.kind != "img2img":
            raise RequestValidationError(where, "the initial noise multiplier applies to img2img only")
        return dataclasses.replace(request, initial_noise_multiplier=float(value))
    if kind in SAMPLER_PARAMETER_AXES:  # kept only where the cell's sampler uses it (`a1111.samplers`)
        current = dataclasses.asdict(request.sampler_parameters)
        parameters = sampler_parameters(request.sampler_name, **{**current, kind: float(value)})
        return dataclasses.replace(request, sampler_parameters=parameters)
    if kind == "sampler":  # A1111 1.9+: the request's schedule type stays unless the name carries one
        choice = resolve_sampler(str(value), request.scheduler)
        return dataclasses.replace(request, sampler_name=choice.name, scheduler=choice.schedule_label)
    if kind == "checkpoint":
        settings = {**request.override_settings, "sd_model_checkpoint": value}
        return dataclasses.replace(request, checkpoint=str(value), override_settings=settings)
    if kind == "vae":
        settings = {**request.override_settings, "sd_vae": value}
        return dataclasses.replace(request, vae=str(value), override_settings=settings)
    if kind == "prompt_sr":
        search = axis.values[0]
        if search not in request.prompt and search not in request.negative_prompt:
            raise RequestValidationError(where, f"Prompt S/R did not find {search!r} in the prompt or the negative prompt")
        return dataclasses.replace(
            request, prompt=request.prompt.replace(search, value), negative_prompt=request.negative_prompt.replace(search, value)
        )
    if kind == "lora_weight":
        prompt, changed = replace_lora_weight(request.prompt, float(value), axis.lora)
        negative, changed_negative = replace_lora_weight(request.negative_prompt, float(value), axis.lora)
        if not changed + changed_negative:
            tag = f"<lora:{axis.lora}:…>" if axis.lora else "a <lora:name:weight> tag"
            raise RequestValidationError(where, f"the LoRA-weight axis needs {tag} in the prompt")
        # the hires prompts' tags too: the hires pass applies the first pass's networks (`job_submit`)
        hr_prompt, _ = replace_lora_weight(request.hr_prompt, float(value), axis.lora)
        hr_negative, _ = replace_lora_weight(request.hr_negative_prompt, float(value), axis.lora)
        return dataclasses.replace(
            request, prompt=prompt, negative_prompt=negative, hr_prompt=hr_prompt, hr_negative_prompt=hr_negative
        )
    raise AssertionError(f"unhandled axis type {kind}")


def expand_cells(base: GenerationRequest, plot: XyzPlot, limits: Limits | None = None) -> list[Cell]:
    """Every cell's request, in A1111's order (x fastest, then y, then z), values applied x, y, z.

    With `limits`, a prompt a Prompt S/R or LoRA-weight value makes longer than
    `limits.max_prompt_chars` is refused naming that axis (the base prompt was checked already)."""
    cells = []
    for zi, z_value in enumerate(plot.z.values):
        for yi, y_value in enumerate(plot.y.values):
            for xi, x_value in enumerate(plot.x.values):
                request = base
                # Sampler parameters last: they are kept only where the cell's sampler (another axis's
                # value, maybe) uses them, as A1111 sets every field before it picks its sampler's.
                applied = sorted(
                    zip(AXIS_NAMES, plot.axes, (x_value, y_value, z_value), strict=True),
                    key=lambda item: item[1].type.id in SAMPLER_PARAMETER_AXES,
                )
                for name, axis, value in applied:
                    request = apply_axis_value(request, axis, value, f"xyz.{name}.values")
                    longest = max(len(request.prompt), len(request.negative_prompt))
                    if limits is not None and longest > limits.max_prompt_chars:
                        raise RequestValidationError(
                            f"xyz.{name}.values",
                            f"makes a prompt of {longest} characters; at most {limits.max_prompt_chars} are allowed",
                        )
                cells.append(Cell(
                    index=len(cells), position=(xi, yi, zi),
                    labels=(plot.x.labels[xi], plot.y.labels[yi], plot.z.labels[zi]), request=request,
                ))
    return cells
