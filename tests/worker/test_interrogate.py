"""The interrogate runtime (`runtime/interrogate.py`) on tiny random-weight BLIP, CLIP and tagger
folders built with transformers (`runtime/tiny/interrogate.py`) in a temporary folder, and A1111's
caption rules (`a1111/interrogate.py`) over what it returns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from a1111.interrogate import (
    InterrogateSettings,
    category_of,
    category_phrases,
    clip_caption,
    deepbooru_caption,
)
from runtime.interrogate import InterrogateModelError, InterrogateRuntime
from runtime.specs import ClipInterrogateSpec, ModelFolder, PhraseCategory, TaggerSpec
from runtime.tiny.interrogate import BLIP_WORDS, CATEGORIES, TAGS, write_tiny_blip, write_tiny_clip, write_tiny_tagger


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interrogate")
    return {
        "blip": write_tiny_blip(root / "blip"), "clip": write_tiny_clip(root / "clip"),
        "tagger": write_tiny_tagger(root / "tagger"),
    }


@pytest.fixture(scope="module")
def runtime() -> InterrogateRuntime:
    return InterrogateRuntime(device=torch.device("cpu"), dtype=torch.float32)


def _image() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 80, 30))


def _clip_spec(folders: dict[str, Path], **settings) -> ClipInterrogateSpec:
    categories = tuple(
        PhraseCategory(name=name, sha256=f"{name}-sha", phrases=phrases, topn=2 if name == "flavors" else 1)
        for name, phrases in CATEGORIES.items()
    )
    return ClipInterrogateSpec(
        blip=ModelFolder(str(folders["blip"]), "blip-sha"), clip=ModelFolder(str(folders["clip"]), "clip-sha"),
        categories=categories, **{"num_beams": 2, "min_length": 3, "max_length": 8, **settings},
    )


def test_clip_interrogation_is_a_blip_caption_then_each_categorys_ranked_phrases(folders, runtime) -> None:
    spec = _clip_spec(folders)
    result = runtime.clip(_image(), spec)
    words = result.caption.split()
    assert 1 <= len(words) <= 8 and set(words) <= set(BLIP_WORDS), result.caption  # the tiny vocabulary's words
    assert [len(matches) for matches in result.ranked] == [1, 2, 1, 1]  # flavors ranks its top 2
    for (name, phrases), matches in zip(CATEGORIES.items(), result.ranked, strict=True):
        assert all(phrase in phrases and 0.0 < probability <= 1.0 for phrase, probability in matches), name
    flavors = result.ranked[1]
    assert flavors[0][1] >= flavors[1][1]  # best first
    text = clip_caption(result.caption, result.ranked, return_ranks=False)
    assert text == ", ".join([result.caption, *(phrase for matches in result.ranked for phrase, _ in matches)])
    ranked = clip_caption(result.caption, result.ranked, return_ranks=True)
    assert re.fullmatch(re.escape(result.caption) + r"(, \([^:]+:[01]\.\d{3}\)){5}", ranked), ranked
    # deterministic (beam search, no sampling), and the second call reuses the models and text features
    loads = runtime.loads
    assert runtime.clip(_image(), spec) == result and runtime.loads == loads
    assert runtime.clip(_image(), _clip_spec(folders, num_beams=1, min_length=1, max_length=3)).caption.count(" ") <= 2


def test_the_tagger_scores_every_tag_and_a1111s_rules_threshold_sort_and_format_them(folders, runtime) -> None:
    scores = runtime.tags(_image(), TaggerSpec(ModelFolder(str(folders["tagger"]), "tagger-sha")))
    assert set(scores) == set(TAGS) and all(0.0 < p < 1.0 for p in scores.values())  # sigmoid per tag
    # a threshold at the median keeps the upper half, never a rating tag
    threshold = sorted(scores.values())[len(scores) // 2]
    settings = InterrogateSettings(deepbooru_score_threshold=threshold, deepbooru_sort_alpha=False)
    kept = sorted((tag for tag, p in scores.items() if p >= threshold and not tag.startswith("rating:")),
                  key=lambda tag: -scores[tag])
    expected = [re.sub(r"([\\()])", r"\\\1", tag.replace("_", " ")) for tag in kept]
    assert deepbooru_caption(scores, settings) == ", ".join(expected)


def test_deepbooru_caption_applies_each_option() -> None:
    scores = {"long_hair": 0.9, "smile_(expression)": 0.7, "cat": 0.6, "rating:safe": 0.99, "dog": 0.2}
    assert deepbooru_caption(scores, InterrogateSettings()) == r"cat, long hair, smile \(expression\)"  # A1111's defaults
    by_score = InterrogateSettings(deepbooru_sort_alpha=False, deepbooru_use_spaces=False, deepbooru_escape=False)
    assert deepbooru_caption(scores, by_score) == "long_hair, smile_(expression), cat"
    ranks = InterrogateSettings(return_ranks=True, deepbooru_filter_tags="long hair, dog", deepbooru_score_threshold=0.65)
    assert deepbooru_caption(scores, ranks) == r"(smile \(expression\):0.700)"
    assert deepbooru_caption(scores, InterrogateSettings(deepbooru_score_threshold=1.0)) == ""


def test_category_files_and_settings_read_as_a1111_means_them() -> None:
    assert category_of("artists.txt") == ("artists", 1) and category_of("flavors.top3.txt") == ("flavors.top3", 3)
    assert category_phrases(" a \n\n b\nc \n", 2) == ["a", "b"] and category_phrases("a\nb\n", 0) == ["a", "b"]
    settings = InterrogateSettings.from_options({
        "interrogate_clip_num_beams": 99, "interrogate_clip_min_length": 30, "interrogate_clip_max_length": 10,
        "interrogate_clip_skip_categories": ["artists"], "interrogate_deepbooru_score_threshold": "high",
        "interrogate_return_ranks": True,
    })
    assert (settings.clip_num_beams, settings.clip_min_length, settings.clip_max_length) == (16, 30, 30)
    assert settings.clip_skip_categories == ("artists",) and settings.deepbooru_score_threshold == 0.5
    assert settings.return_ranks and settings.deepbooru_sort_alpha  # A1111's default where none is set


def test_a_folder_that_is_not_the_model_is_a_clear_error(folders, runtime, tmp_path) -> None:
    with pytest.raises(InterrogateModelError, match="no model.safetensors"):
        runtime.tags(_image(), TaggerSpec(ModelFolder(str(tmp_path), "empty")))
    spec = _clip_spec(folders)
    wrong = ClipInterrogateSpec(blip=ModelFolder(str(folders["tagger"]), "wrong"), clip=spec.clip, categories=())
    with pytest.raises(InterrogateModelError, match="cannot be loaded offline"):
        runtime.clip(_image(), wrong)
