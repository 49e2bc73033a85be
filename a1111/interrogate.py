"""A1111's `/sdapi/v1/interrogate` as a typed request and A1111's caption rules (pure: no Django, no torch).

`POST /sdapi/v1/interrogate` takes `{"image": base64 or data URI, "model": "clip" | "deepdanbooru"}`
and answers `{"caption": str}`. `parse_interrogate_model` reads `model` (A1111's default "clip";
any other name is A1111's 404 "Model not found", here a `NotFound` naming `model`); the image is
decoded by the adapter as Extras' is. `interrogate_submit` (`inference/services.py`) then stores
the image, reads the member's interrogate options into `InterrogateSettings` (A1111 reads its
global `shared.opts`; here they are the member's own) and queues one `Job` of kind "interrogate"
whose params are an `InterrogateRequest`. A worker runs the models (`inference/runner/interrogate.py`,
`runtime/interrogate.py`) and turns their raw output into A1111's text with the functions below:

* **clip**: a BLIP caption (beam search with `interrogate_clip_num_beams`, between
  `interrogate_clip_min_length` and `interrogate_clip_max_length` tokens), then for each category
  file of phrases (`models/interrogate/*.txt`, sorted by name, those named in
  `interrogate_clip_skip_categories` left out) its `topn` phrases ranked by CLIP image-text
  similarity (a softmax over the category's first `interrogate_clip_dict_limit` phrases, 0: all),
  each appended as `, phrase` or, with `interrogate_return_ranks`, `, (phrase:0.123)`
  (`clip_caption`). A file named `name.topN.txt` contributes N phrases, the others one: what
  A1111's `re_topn` means to do (its pattern never matches a stem, so A1111 always takes one).
* **deepdanbooru**: the tagger's per-tag probabilities, kept at or over
  `interrogate_deepbooru_score_threshold`, `rating:*` tags dropped, sorted by name
  (`deepbooru_sort_alpha`) or by score, `deepbooru_filter_tags` removed, `_` as spaces
  (`deepbooru_use_spaces`), `\\`, `(` and `)` escaped (`deepbooru_escape`), and with
  `interrogate_return_ranks` written `(tag:0.812)` (`deepbooru_caption`), as A1111's `tag_multi`.

What a model folder must be (`*_problem` read its `config.json`): BLIP a transformers
`BlipForConditionalGeneration`, CLIP a `CLIPModel`, the tagger any `…ForImageClassification`
whose `id2label` names its tags (a converted danbooru tagger; A1111's own DeepDanbooru is a
hand-written torch port we do not ship, so its `.pt` is not read).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from a1111.errors import InvalidField, NotFound

INTERROGATE_KIND = "interrogate"
CLIP, DEEPDANBOORU = "clip", "deepdanbooru"
INTERROGATE_MODELS = (CLIP, DEEPDANBOORU)  # A1111 1.10's two interrogators, as the API names them

# Bounds on the member's options (A1111's sliders), so a stored option cannot make a worker beam
# search for thousands of tokens.
MAX_NUM_BEAMS = 16
MAX_MIN_LENGTH = 128
MAX_MAX_LENGTH = 256
MAX_DICT_LIMIT = 100_000
MAX_TOPN = 100

_TOPN = re.compile(r"\.top(\d+)$")
_ESCAPED = re.compile(r"([\\()])")  # A1111's deepbooru re_special


class InterrogateModelNotFound(NotFound):
    """A model name A1111 does not interrogate with (A1111: 404 "Model not found")."""


def parse_interrogate_model(data: Mapping[str, Any]) -> str:
    """`model` of an interrogate body: "clip" (the default, also for null) or "deepdanbooru"."""
    value = data.get("model", CLIP)
    if value is None:
        return CLIP
    if not isinstance(value, str):
        raise InvalidField('must be "clip" or "deepdanbooru"', field="model")
    if value not in INTERROGATE_MODELS:
        shown = value[:60]
        raise InterrogateModelNotFound(
            f'Model not found: {shown!r}; interrogate runs "clip" (BLIP caption and CLIP ranking) or "deepdanbooru"',
            field="model",
        )
    return value


def _clamped_int(options: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return max(lo, min(hi, int(value)))


def _flag(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    return value if isinstance(value, bool) else default


@dataclass(frozen=True)
class InterrogateSettings:
    """The member's interrogate options (A1111's keys without their prefixes), read once at submit
    so the job runs with the options it was sent under."""

    return_ranks: bool = False
    clip_num_beams: int = 1
    clip_min_length: int = 24
    clip_max_length: int = 48
    clip_dict_limit: int = 1500  # 0: every phrase of a category
    clip_skip_categories: tuple[str, ...] = ()
    deepbooru_score_threshold: float = 0.5
    deepbooru_sort_alpha: bool = True
    deepbooru_use_spaces: bool = True
    deepbooru_escape: bool = True
    deepbooru_filter_tags: str = ""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> InterrogateSettings:
        """From A1111's option keys (`a1111/options.py`), each bounded; a value of the wrong type
        reads as A1111's default (the options endpoint already refuses those)."""
        min_length = _clamped_int(options, "interrogate_clip_min_length", 24, 1, MAX_MIN_LENGTH)
        skip = options.get("interrogate_clip_skip_categories") or []
        threshold = options.get("interrogate_deepbooru_score_threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            threshold = 0.5
        filter_tags = options.get("deepbooru_filter_tags", "")
        return cls(
            return_ranks=_flag(options, "interrogate_return_ranks", False),
            clip_num_beams=_clamped_int(options, "interrogate_clip_num_beams", 1, 1, MAX_NUM_BEAMS),
            clip_min_length=min_length,
            clip_max_length=_clamped_int(options, "interrogate_clip_max_length", 48, min_length, MAX_MAX_LENGTH),
            clip_dict_limit=_clamped_int(options, "interrogate_clip_dict_limit", 1500, 0, MAX_DICT_LIMIT),
            clip_skip_categories=tuple(str(name) for name in skip) if isinstance(skip, (list, tuple)) else (),
            deepbooru_score_threshold=max(0.0, min(1.0, float(threshold))),
            deepbooru_sort_alpha=_flag(options, "deepbooru_sort_alpha", True),
            deepbooru_use_spaces=_flag(options, "deepbooru_use_spaces", True),
            deepbooru_escape=_flag(options, "deepbooru_escape", True),
            deepbooru_filter_tags=filter_tags[:10_000] if isinstance(filter_tags, str) else "",
        )


@dataclass(frozen=True)
class InterrogateRequest:
    """What an interrogate job holds (`Job.params`): the interrogator, the image's storage key and
    size, the member's settings, and the model files resolved at submit (`resolved_models`: for
    clip `blip`, `clip` and `categories`, for deepdanbooru `tagger`; each with its storage `key`
    and `sha256`, never this machine's path)."""

    model: str
    image: str = ""
    size: tuple[int, int] = (0, 0)
    settings: InterrogateSettings = field(default_factory=InterrogateSettings)
    resolved_models: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["settings"]["clip_skip_categories"] = list(self.settings.clip_skip_categories)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InterrogateRequest:
        """Rebuild a request stored by `to_json` (already validated; `TypeError`/`KeyError` when malformed)."""
        settings = dict(data.get("settings") or {})
        settings["clip_skip_categories"] = tuple(settings.get("clip_skip_categories") or ())
        width, height = data.get("size") or (0, 0)
        return cls(
            model=str(data["model"]), image=str(data.get("image", "")), size=(int(width), int(height)),
            settings=InterrogateSettings(**settings), resolved_models=dict(data.get("resolved_models") or {}),
        )

    def with_models(self, resolved: dict[str, Any]) -> InterrogateRequest:
        return replace(self, resolved_models=resolved)


# --- the CLIP interrogator's category files --------------------------------------------------


def category_of(filename: str) -> tuple[str, int]:
    """(category name, phrases it contributes) of a phrase file: `flavors.top3.txt` → ("flavors.top3", 3)."""
    stem = filename[:-4] if filename.endswith(".txt") else filename
    match = _TOPN.search(stem)
    return stem, max(1, min(MAX_TOPN, int(match.group(1)))) if match else 1


def category_phrases(text: str, dict_limit: int) -> list[str]:
    """A category file's phrases as A1111 reads them (each line stripped; blank lines dropped
    here, as they would rank an empty phrase), the first `dict_limit` only (0: all)."""
    phrases = [line.strip() for line in text.splitlines() if line.strip()]
    return phrases[:dict_limit] if dict_limit else phrases


def clip_caption(caption: str, ranked: Sequence[Sequence[tuple[str, float]]], *, return_ranks: bool) -> str:
    """A1111's clip interrogation text: the caption, then each category's top phrases in order;
    `ranked` holds (phrase, softmax probability 0..1) per category, best first."""
    text = caption.strip()
    for matches in ranked:
        for phrase, probability in matches:
            text += f", ({phrase}:{probability:.3f})" if return_ranks else f", {phrase}"
    return text


# --- deepdanbooru ------------------------------------------------------------------------------


def deepbooru_caption(scores: Mapping[str, float], settings: InterrogateSettings) -> str:
    """A1111's `DeepDanbooru.tag_multi` over the tagger's per-tag probabilities."""
    kept = {
        tag: probability for tag, probability in scores.items()
        if probability >= settings.deepbooru_score_threshold and not tag.startswith("rating:")
    }
    if settings.deepbooru_sort_alpha:
        tags = sorted(kept)
    else:
        tags = [tag for tag, _ in sorted(kept.items(), key=lambda item: -item[1])]
    filtered = {name.strip().replace(" ", "_") for name in settings.deepbooru_filter_tags.split(",")}
    parts = []
    for tag in tags:
        if tag in filtered:
            continue
        shown = tag.replace("_", " ") if settings.deepbooru_use_spaces else tag
        if settings.deepbooru_escape:
            shown = _ESCAPED.sub(r"\\\1", shown)
        if settings.return_ranks:
            shown = f"({shown}:{kept[tag]:.3f})"
        parts.append(shown)
    return ", ".join(parts)


# --- what a model folder's config.json must say -------------------------------------------------

_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


def _architectures(config: Mapping[str, Any]) -> list[str]:
    names = config.get("architectures")
    return [str(name) for name in names] if isinstance(names, list) else []


def _architecture_problem(config: Any, architecture: str, model_type: str) -> str:
    """Why a parsed config.json is not an `architecture` ("" when it is; a config without
    `architectures` passes on its `model_type`)."""
    if not isinstance(config, Mapping):
        return "its config.json is not a JSON object"
    names = _architectures(config)
    if architecture in names or (not names and config.get("model_type") == model_type):
        return ""
    return f"it is not a {architecture} (config.json architectures: {', '.join(names)[:200] or 'none'})"


def blip_problem(config: Any) -> str:
    """Why a parsed config.json is not a BLIP captioning model ("" when it is one)."""
    return _architecture_problem(config, "BlipForConditionalGeneration", "blip")


def clip_problem(config: Any) -> str:
    """Why a parsed config.json is not a CLIP model with both towers ("" when it is one)."""
    return _architecture_problem(config, "CLIPModel", "clip")


def tagger_problem(config: Any) -> str:
    """Why a parsed config.json is not a multi-label image tagger ("" when it is one)."""
    if not isinstance(config, Mapping):
        return "its config.json is not a JSON object"
    names = _architectures(config)
    if not any(name.endswith("ForImageClassification") for name in names):
        return f"it is not an image classification model (config.json architectures: {', '.join(names)[:200] or 'none'})"
    labels = config.get("id2label")
    if not isinstance(labels, Mapping) or not labels or all(_DEFAULT_LABEL.match(str(v)) for v in labels.values()):
        return "its config.json id2label does not name its tags (a danbooru tagger lists one tag per output)"
    return ""
