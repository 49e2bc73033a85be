"""The model files `/sdapi/v1/interrogate` runs with: what an operator placed in the public models folders.

A1111 keeps its interrogators' models in `models/BLIP`, `models/interrogate` and
`models/deepbooru` and downloads them on first use; the platform downloads nothing, so an operator
places them (README, "Models"), in the transformers layout the workers load offline:

* `public/models/BLIP/<folder>/`: a `BlipForConditionalGeneration` with its `BlipProcessor`
  (config.json, model.safetensors, processor and tokenizer files), e.g.
  Salesforce/blip-image-captioning-large saved with `save_pretrained`;
* `public/models/CLIP/<folder>/`: a `CLIPModel` with its `CLIPProcessor`, e.g.
  openai/clip-vit-large-patch14 (A1111's ViT-L/14);
* `public/models/interrogate/*.txt`: the CLIP category phrase files, one phrase a line
  (A1111's artists.txt, flavors.txt, mediums.txt, movements.txt; `name.topN.txt` ranks N);
* `public/models/deepbooru/<folder>/`: a multi-label `…ForImageClassification` tagger whose
  `id2label` lists the danbooru tags (a converted DeepDanbooru or WD tagger) with its image
  processor config.

Interrogation models are public only (like A1111's, one set per install): members do not
upload them. A folder may also be the models folder itself (config.json directly in
`models/BLIP`); with several, the first by name is used. Weights must be safetensors: pickled
`pytorch_model.bin` can run code when read and is refused here, before any job is queued.

`interrogate_models_resolve(model)` answers the files (storage key + sha256, as every job names
its models) or `ModelNotFound` naming `model` and saying exactly what to install where: a 404,
which A1111 clients already handle for this route (A1111 answers 404 "Model not found"), with
the install hint in `detail`, which they print.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from a1111.interrogate import CLIP, blip_problem, category_of, clip_problem, tagger_problem
from inference.model_registry import SAFE_WEIGHTS, ModelNotFound, cached_sha256
from inference.storage import model_file_key
from tenants.workdirs import public_model_dir

FIELD = "model"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")

BLIP_HINT = (
    "a BLIP captioning model: a transformers BlipForConditionalGeneration folder with its processor "
    "(config.json, model.safetensors, preprocessor and tokenizer files; e.g. Salesforce/blip-image-captioning-large "
    "saved with save_pretrained) in the public models/BLIP folder"
)
CLIP_HINT = (
    "a CLIP model: a transformers CLIPModel folder with its processor (e.g. openai/clip-vit-large-patch14) "
    "in the public models/CLIP folder"
)
CATEGORIES_HINT = (
    "the CLIP category phrase files (artists.txt, flavors.txt, mediums.txt, movements.txt, one phrase a line) "
    "in the public models/interrogate folder"
)
TAGGER_HINT = (
    "a danbooru tagger: a transformers image-classification folder whose config.json id2label lists the tags "
    "(config.json, model.safetensors, preprocessor_config.json) in the public models/deepbooru folder"
)


def _model_folders(kind: str) -> list[Path]:
    """Folders holding a config.json in the public `kind` folder (the folder itself first), inside it."""
    base = public_model_dir(kind)
    if not base.is_dir():
        return []
    root = base.resolve()
    found = [base] if (base / "config.json").is_file() else []
    for config in sorted(base.glob("*/config.json")):
        if config.parent.resolve().is_relative_to(root):
            found.append(config.parent)
    return found


def _folder_entry(kind: str, check: Callable[[Any], str], hint: str) -> dict[str, str]:
    """The first usable model folder of `kind`: {"name", "key", "sha256"}; `ModelNotFound` saying
    what is wrong with what is there, or what to install."""
    problems = []
    for folder in _model_folders(kind):
        weights = next((folder / name for name in SAFE_WEIGHTS if (folder / name).is_file()), None)
        if weights is None:
            pickled = any((folder / name).is_file() for name in PICKLED)
            problems.append(f"{folder.name}: " + (
                "pickled weights (pytorch_model.bin) are not loaded: save it with safetensors" if pickled
                else "no model.safetensors"))
            continue
        try:
            problem = check(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            problem = f"its config.json cannot be read ({type(exc).__name__})"
        if problem:
            problems.append(f"{folder.name}: {problem}")
            continue
        return {"name": folder.name, "key": model_file_key(folder), "sha256": cached_sha256(weights.resolve())}
    found = f" (found {'; '.join(problems)[:400]})" if problems else ""
    raise ModelNotFound(f"install {hint}{found}", field=FIELD)


def _categories(skip: tuple[str, ...]) -> list[dict[str, Any]]:
    """The category phrase files, sorted by name, less the skipped ones: {"name", "topn", "key", "sha256"}."""
    base = public_model_dir("interrogate")
    if not base.is_dir():
        return []
    root = base.resolve()
    files = [path for path in sorted(base.glob("*.txt")) if path.is_file() and path.resolve().is_relative_to(root)]
    categories = []
    for path in files:
        name, topn = category_of(path.name)
        if name in skip:
            continue
        categories.append({"name": name, "topn": topn, "key": model_file_key(path), "sha256": cached_sha256(path.resolve())})
    return categories


def interrogate_models_resolve(model: str, *, skip_categories: tuple[str, ...] = ()) -> dict[str, Any]:
    """The files `model` ("clip" or "deepdanbooru") runs with, or `ModelNotFound` (field `model`)
    naming everything missing at once: for clip {"blip", "clip", "categories"}, else {"tagger"}."""
    if model != CLIP:
        try:
            return {"tagger": _folder_entry("deepbooru", tagger_problem, TAGGER_HINT)}
        except ModelNotFound as exc:
            raise ModelNotFound(f"interrogate with deepdanbooru is not installed: {exc.message}", field=FIELD) from None
    resolved: dict[str, Any] = {}
    missing: list[str] = []
    for slot, kind, check, hint in (("blip", "BLIP", blip_problem, BLIP_HINT), ("clip", "CLIP", clip_problem, CLIP_HINT)):
        try:
            resolved[slot] = _folder_entry(kind, check, hint)
        except ModelNotFound as exc:
            missing.append(exc.message.removeprefix("install "))
    has_files = bool(_categories(()))
    if not has_files:
        missing.append(CATEGORIES_HINT)
    if missing:
        raise ModelNotFound(
            "interrogate with clip (a BLIP caption ranked with CLIP, as A1111) is not installed: install "
            + "; and ".join(missing), field=FIELD,
        )
    resolved["categories"] = _categories(skip_categories)
    return resolved
