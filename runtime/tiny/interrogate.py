"""Tiny random-weight interrogate models: BLIP, CLIP, a danbooru-style tagger and category files.

Each writer produces exactly what an operator places for a real model (README, "Models"): a
transformers folder saved with `save_pretrained` (config.json, model.safetensors, the processor's
files), so the worker loads it through the same `BlipForConditionalGeneration` / `CLIPModel` /
`AutoModelForImageClassification` path as Salesforce/blip-image-captioning-large,
openai/clip-vit-large-patch14 or a converted tagger. Sizes are tiny (32-wide layers, 32×32
images) and the weights random but deterministic per seed, so captions are strings of the tiny
vocabulary's words; every code path of a real model runs. The BLIP tokenizer is a WordPiece
vocabulary written here; the CLIP tokenizer is OpenAI's real BPE, derived from the merges the
project ships (`runtime/checkpoints/loading.py`). Built when needed, never committed.

`write_tiny_interrogate(public_models)` writes all of them where the public models folders are.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from runtime.tiny.model import write_folder_atomically

BLIP_WORDS = (
    "a", "an", "the", "photo", "picture", "painting", "of", "cat", "dog", "house", "tree", "sitting", "on", "in",
    "with", "red", "blue", "green", "table", "garden", "sky", "and", "small", "large", "woman", "man",
)
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CATEGORIES = {
    "artists": ("by Claude Monet", "by Hokusai", "by Greg Rutkowski", "by Alphonse Mucha"),
    "flavors": ("trending on artstation", "highly detailed", "soft light", "8k", "bokeh", "sharp focus"),
    "mediums": ("a photograph", "an oil painting", "a watercolor painting", "a digital painting"),
    "movements": ("impressionism", "art nouveau", "surrealism"),
}
TAGS = ("1girl", "solo", "cat", "no_humans", "outdoors", "smile_(expression)", "long_hair", "rating:safe")
IMAGE_SIZE = 32


def write_tiny_blip(folder: Path, *, seed: int = 0) -> Path:
    """A tiny BlipForConditionalGeneration with its BlipProcessor (a WordPiece vocabulary of `BLIP_WORDS`)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    def save(staging: Path) -> None:
        vocab = staging / "vocab.txt"
        vocab.write_text("\n".join([*BERT_SPECIALS, *BLIP_WORDS]) + "\n", encoding="utf-8")
        tokenizer = BertTokenizer(str(vocab))
        vocab.unlink()  # the processor saves its own tokenizer files
        torch.manual_seed(seed)
        config = BlipConfig(
            text_config={
                "vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 37, "max_position_embeddings": 128, "bos_token_id": tokenizer.cls_token_id,
                "pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.sep_token_id,
                "eos_token_id": tokenizer.sep_token_id,
            },
            vision_config={
                "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
                "image_size": IMAGE_SIZE, "patch_size": 8,
            },
            projection_dim=32, image_text_hidden_size=32,
        )
        BlipForConditionalGeneration(config).eval().save_pretrained(staging, safe_serialization=True)
        processor = BlipProcessor(
            image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer=tokenizer,
        )
        processor.save_pretrained(staging)

    return write_folder_atomically(folder, save)


def write_tiny_clip(folder: Path, *, seed: int = 0) -> Path:
    """A tiny CLIPModel (both towers) with a CLIPProcessor over OpenAI CLIP's real BPE vocabulary."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from runtime.checkpoints.loading import clip_vocab_and_merges

    def save(staging: Path) -> None:
        vocab, merges = clip_vocab_and_merges()
        (staging / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(str(staging / "vocab.json"), str(staging / "merges.txt"))
        for name in ("vocab.json", "merges.txt"):
            (staging / name).unlink()
        torch.manual_seed(seed)
        config = CLIPConfig(
            text_config={
                "vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 37, "max_position_embeddings": 77,
            },
            vision_config={
                "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
                "image_size": IMAGE_SIZE, "patch_size": 8,
            },
            projection_dim=16,
        )
        CLIPModel(config).eval().save_pretrained(staging, safe_serialization=True)
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        )
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(staging)

    return write_folder_atomically(folder, save)


def write_tiny_tagger(folder: Path, *, seed: int = 0, tags: tuple[str, ...] = TAGS) -> Path:
    """A tiny multi-label ViTForImageClassification whose `id2label` is `tags` (a danbooru tagger's shape)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    def save(staging: Path) -> None:
        torch.manual_seed(seed)
        config = ViTConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=IMAGE_SIZE,
            patch_size=8, id2label=dict(enumerate(tags)), label2id={tag: i for i, tag in enumerate(tags)},
            problem_type="multi_label_classification",
        )
        ViTForImageClassification(config).eval().save_pretrained(staging, safe_serialization=True)
        ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(staging)

    return write_folder_atomically(folder, save)


def write_tiny_categories(folder: Path, categories: dict[str, tuple[str, ...]] = CATEGORIES) -> list[Path]:
    """A1111's four category phrase files (a few phrases each) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, phrases in categories.items():
        path = folder / f"{name}.txt"
        path.write_text("\n".join(phrases) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


TINY_NAMES = {"blip": "atelier-tiny-blip", "clip": "atelier-tiny-clip", "tagger": "atelier-tiny-tagger"}


def write_tiny_interrogate(models: dict[str, Path], *, seed: int = 0) -> dict[str, Path]:
    """Every tiny interrogate model into the public folders `models` names ("BLIP", "CLIP",
    "interrogate", "deepbooru": `ATELIER_PUBLIC_MODEL_DIRS`), as an operator places real ones."""
    return {
        "blip": write_tiny_blip(models["BLIP"] / TINY_NAMES["blip"], seed=seed),
        "clip": write_tiny_clip(models["CLIP"] / TINY_NAMES["clip"], seed=seed),
        "tagger": write_tiny_tagger(models["deepbooru"] / TINY_NAMES["tagger"], seed=seed),
        "categories": write_tiny_categories(models["interrogate"])[0].parent,
    }
