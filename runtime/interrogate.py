"""A1111's interrogators on one image, with transformers models loaded offline (no Django).

`InterrogateRuntime.clip(image, spec)` is A1111's clip interrogator: a BLIP caption (beam search,
no sampling, with the spec's beams and token lengths), then for each category the CLIP softmax
over `100 · cos(image, phrase)` of its phrases, best `topn` first, exactly A1111's `rank`
(its fixed scale of 100, not the model's learned logit scale). It returns the raw
`ClipInterrogation`; `a1111.interrogate.clip_caption` writes A1111's text.
`InterrogateRuntime.tags(image, spec)` runs a multi-label image classifier (the deepdanbooru
role) and returns every tag of its `id2label` with its sigmoid probability;
`a1111.interrogate.deepbooru_caption` thresholds, sorts and formats them. A sigmoid per tag is
what DeepDanbooru's last layer is, and what a tagger converted to transformers (trained with
`problem_type="multi_label_classification"`) leaves off its logits.

Why transformers folders: A1111 loads BLIP from Salesforce's original `.pth` through a vendored
copy of the BLIP repository, CLIP through OpenAI's `clip` package, and DeepDanbooru through its
own hand-written torch port; the platform ships none of that code. `BlipForConditionalGeneration`,
`CLIPModel` and `AutoModelForImageClassification` load the same networks from a folder an operator
saves with `save_pretrained`, with their processors (resizing and normalising as each model was
trained), `local_files_only` and safetensors only: nothing is downloaded or unpickled.

Models stay loaded in one `LruCache` keyed by weights hash (A1111 moves its interrogators to
RAM after each call unless `interrogate_keep_models_in_memory`; a worker keeps them for the next
job instead and drops the least recently used). A category's text features are cached by
(CLIP hash, file hash, phrase count), so a second interrogation encodes only the image.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from runtime.caches import LruCache
from runtime.specs import ClipInterrogateSpec, ModelFolder, PhraseCategory, TaggerSpec

logger = logging.getLogger(__name__)

CLIP_SCALE = 100.0  # A1111's rank(): softmax(100 · image @ text)
TEXT_BATCH = 256  # phrases encoded per CLIP text forward


class InterrogateModelError(RuntimeError):
    """A model folder that cannot be loaded as the interrogator needs; the message says why."""


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    processor: Any  # its processor (BLIP, CLIP) or image processor (tagger)


@dataclass(frozen=True)
class ClipInterrogation:
    """The BLIP caption and, per category in the spec's order, (phrase, probability 0..1) best first."""

    caption: str
    ranked: tuple[tuple[tuple[str, float], ...], ...]


def _load(folder: ModelFolder, kind: str, *, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load `kind` ("blip", "clip" or "tagger") from a folder offline; `InterrogateModelError` saying why not."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder only: never the hub
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        BlipForConditionalGeneration,
        BlipProcessor,
        CLIPModel,
        CLIPProcessor,
    )

    path = Path(folder.path)
    classes = {
        "blip": (BlipForConditionalGeneration, BlipProcessor),
        "clip": (CLIPModel, CLIPProcessor),
        "tagger": (AutoModelForImageClassification, AutoImageProcessor),
    }
    model_class, processor_class = classes[kind]
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        raise InterrogateModelError(f"the {kind} model {path.name} has no model.safetensors")
    try:
        processor = processor_class.from_pretrained(path, local_files_only=True)
        model = model_class.from_pretrained(path, local_files_only=True, use_safetensors=True, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - any loader error becomes the job's message
        raise InterrogateModelError(
            f"the {kind} model {path.name} cannot be loaded offline ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    model.to(device)
    model.eval()
    return LoadedModel(model=model, processor=processor)


def _features(output: Any) -> torch.Tensor:
    """`get_image_features` / `get_text_features` answer a tensor, or (newer transformers) an
    output whose `pooler_output` is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class InterrogateRuntime:
    """The interrogators' models kept loaded by weights hash, and A1111's two interrogations."""

    def __init__(self, *, device: torch.device, dtype: torch.dtype, capacity: int = 3) -> None:
        self.device, self.dtype = device, dtype
        self._models: LruCache[LoadedModel] = LruCache(capacity)
        self._text_features: LruCache[torch.Tensor] = LruCache(16)
        self.loads = 0

    def model(self, folder: ModelFolder, kind: str) -> LoadedModel:
        def load() -> LoadedModel:
            started = time.perf_counter()
            loaded = _load(folder, kind, device=self.device, dtype=self.dtype)
            self.loads += 1
            logger.info("loaded %s model %s in %.2fs", kind, Path(folder.path).name, time.perf_counter() - started)
            return loaded

        return self._models.get((kind, folder.sha256), load)

    def _pixels(self, processor: Any, image: Image.Image, model: Any) -> torch.Tensor:
        pixels = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, dtype=next(model.parameters()).dtype)

    @torch.inference_mode()
    def caption(self, image: Image.Image, spec: ClipInterrogateSpec) -> str:
        """BLIP's caption of `image`: beam search (no sampling), `min_length`..`max_length` tokens."""
        blip = self.model(spec.blip, "blip")
        output = blip.model.generate(
            pixel_values=self._pixels(blip.processor, image, blip.model), num_beams=spec.num_beams,
            min_length=spec.min_length, max_length=spec.max_length, do_sample=False,
        )
        return str(blip.processor.decode(output[0], skip_special_tokens=True)).strip()

    def _phrase_features(self, clip: LoadedModel, spec: ClipInterrogateSpec, category: PhraseCategory) -> torch.Tensor:
        """The category's normalised CLIP text features [phrases, dim], cached."""

        def encode() -> torch.Tensor:
            parts = []
            tokenizer = clip.processor.tokenizer
            positions = int(clip.model.config.text_config.max_position_embeddings)  # 77 for OpenAI's CLIP
            for start in range(0, len(category.phrases), TEXT_BATCH):
                tokens = tokenizer(
                    list(category.phrases[start:start + TEXT_BATCH]), padding=True, truncation=True,
                    max_length=positions,
                    return_tensors="pt",
                ).to(self.device)
                features = _features(clip.model.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                )).float()
                parts.append(features / features.norm(dim=-1, keepdim=True))
            return torch.cat(parts)

        return self._text_features.get((spec.clip.sha256, category.sha256, len(category.phrases)), encode)

    @torch.inference_mode()
    def rank(self, image: Image.Image, spec: ClipInterrogateSpec) -> tuple[tuple[tuple[str, float], ...], ...]:
        """Each category's best `topn` phrases for `image` with their softmax probabilities."""
        clip = self.model(spec.clip, "clip")
        image_features = _features(clip.model.get_image_features(
            pixel_values=self._pixels(clip.processor, image, clip.model))).float()
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        ranked = []
        for category in spec.categories:
            if not category.phrases:
                ranked.append(())
                continue
            text_features = self._phrase_features(clip, spec, category)
            similarity = (CLIP_SCALE * image_features @ text_features.T).softmax(dim=-1).mean(dim=0)
            top = similarity.cpu().topk(min(category.topn, len(category.phrases)))
            ranked.append(tuple(
                (category.phrases[int(index)], float(probability))
                for probability, index in zip(top.values, top.indices, strict=True)
            ))
        return tuple(ranked)

    def clip(self, image: Image.Image, spec: ClipInterrogateSpec) -> ClipInterrogation:
        """A1111's clip interrogator: the caption, then the ranked phrases of every category."""
        caption = self.caption(image, spec)
        ranked = self.rank(image, spec) if spec.categories else ()
        return ClipInterrogation(caption=caption, ranked=ranked)

    @torch.inference_mode()
    def tags(self, image: Image.Image, spec: TaggerSpec) -> dict[str, float]:
        """Every tag of the tagger's `id2label` with its sigmoid probability for `image`."""
        tagger = self.model(spec.model, "tagger")
        logits = tagger.model(pixel_values=self._pixels(tagger.processor, image, tagger.model)).logits[0]
        probabilities = torch.sigmoid(logits.float()).cpu().tolist()
        labels = tagger.model.config.id2label
        return {str(labels.get(index, f"LABEL_{index}")): float(p) for index, p in enumerate(probabilities)}
