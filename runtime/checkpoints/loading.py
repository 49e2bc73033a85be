"""Recognise Stable Diffusion checkpoints and load them into diffusers pipelines, fully offline.

A checkpoint is either one A1111-style ``.safetensors`` file in the original LDM key layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*``) or a diffusers
folder (a directory with ``model_index.json``). Pickle files (``.ckpt``, ``.pt``, ...) are refused:
unpickling runs arbitrary code.

Single-file loading needs the component configs and tokenizer files of the architecture. They ship
with this package under ``model_configs/<architecture>/`` (no weights); the CLIP BPE merges are
stored once, gzipped, in ``model_configs/clip_tokenizer/``, and :func:`materialize_config` writes a
complete diffusers config folder (with the derived ``vocab.json`` and ``merges.txt``) into a cache
directory that is handed to ``from_single_file(config=...)``. Nothing is ever fetched from the
Hugging Face hub.

Three families are known, each with a test-only tiny twin of the same structure:

* ``sd15`` (Stable Diffusion 1.x; ``tiny-sd``): CLIP ViT-L text encoder under ``cond_stage_model.transformer.``.
* ``sd2`` (Stable Diffusion 2.x; ``tiny-sd2``): OpenCLIP ViT-H text tower under ``cond_stage_model.model.``,
  linear ``proj_in``, cross-attention width 1024. The 768-v and 512-base checkpoints have identical
  tensors and differ only in what the UNet predicts (``v`` or ``epsilon``); see
  :func:`declared_prediction_type` and :func:`unet_predicts_v` for how that is decided.
* ``sdxl`` (SDXL base 1.0; ``tiny-sdxl``): two text encoders (CLIP ViT-L under
  ``conditioner.embedders.0.transformer.``, OpenCLIP ViT-bigG under ``conditioner.embedders.1.model.``),
  ``label_emb`` size conditioning, loaded into ``StableDiffusionXLPipeline``.

Adding an architecture means adding one :class:`Architecture` entry to ``ARCHITECTURES`` and one
config folder under ``model_configs/``.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = [
    "ARCHITECTURES",
    "PREDICTION_TYPES",
    "Architecture",
    "UnsupportedCheckpoint",
    "clip_vocab_and_merges",
    "declared_prediction_type",
    "detect_architecture",
    "get_architecture",
    "load_pipeline",
    "materialize_config",
    "read_safetensors_header",
    "read_safetensors_shapes",
    "unet_predicts_v",
]

logger = logging.getLogger(__name__)

MODEL_CONFIGS_DIR = Path(__file__).resolve().parent / "model_configs"
CLIP_MERGES_GZ = MODEL_CONFIGS_DIR / "clip_tokenizer" / "merges.txt.gz"

# Bump when the layout written by materialize_config changes, so stale cache folders are not reused.
_MATERIALIZE_FORMAT = "1"
_PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
_MAX_HEADER_BYTES = 100 * 1024 * 1024

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model."
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD 2.x's OpenCLIP ViT-H text tower
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."  # SDXL's first text encoder (CLIP ViT-L)
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."  # SDXL's second text encoder (OpenCLIP ViT-bigG)
SDXL_REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."  # the SDXL refiner's only text encoder (bigG)

PREDICTION_TYPES = ("epsilon", "v_prediction")


class UnsupportedCheckpoint(ValueError):
    """The file is not a checkpoint this worker can load (wrong format or unknown architecture)."""


@dataclass(frozen=True)
class Architecture:
    """A model family that can be loaded from a single LDM-layout ``.safetensors`` file.

    ``signature`` lists tensors (name and exact shape) that a checkpoint of this family must
    contain; all of them must match, and none of ``excluded_keys`` may be present (they mark variants
    with the same signature that load differently, e.g. SD 2.x unCLIP). ``required_prefixes`` are the
    components that must be present. ``family`` (``sd1``, ``sd2``, ``sdxl``) names the key layout.

    ``native_resolution`` is the side the model was trained at; ``native_resolution_epsilon``, where
    set, replaces it for checkpoints that turn out to predict epsilon (SD 2.x 512-base versus 768-v).
    ``probe_v_prediction`` says whether, when a checkpoint declares no prediction type, its UNet is
    probed the way AUTOMATIC1111 does (:func:`unet_predicts_v`); meaningful for trained weights only.
    """

    name: str
    title: str
    config_dir: Path
    signature: tuple[tuple[str, tuple[int, ...]], ...]
    native_resolution: int = 512
    pipeline_class: str = "StableDiffusionPipeline"
    required_prefixes: tuple[str, ...] = (UNET_PREFIX, VAE_PREFIX, TEXT_ENCODER_PREFIX)
    tokenizer_subfolders: tuple[str, ...] = ("tokenizer",)
    family: str = "sd1"
    excluded_keys: tuple[str, ...] = ()
    native_resolution_epsilon: int | None = None
    probe_v_prediction: bool = False

    def matches(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """Whether a checkpoint with these tensor shapes belongs to this architecture."""
        return all(shapes.get(key) == shape for key, shape in self.signature) and not any(
            key in shapes for key in self.excluded_keys
        )

    @property
    def default_prediction_type(self) -> str:
        """The prediction type of the shipped scheduler config."""
        config = json.loads((self.config_dir / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        return str(config.get("prediction_type", "epsilon"))

    def resolution_for(self, prediction_type: str) -> int:
        """The native resolution of a checkpoint of this family that predicts ``prediction_type``."""
        if prediction_type == "epsilon" and self.native_resolution_epsilon is not None:
            return self.native_resolution_epsilon
        return self.native_resolution


_ATTN2_TO_K = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_PROJ_IN = UNET_PREFIX + "input_blocks.1.1.proj_in.weight"  # SD 2.x: linear (C, C); SD 1.x: 1x1 conv
_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"
_LABEL_EMB = UNET_PREFIX + "label_emb.0.0.weight"  # SDXL: (time_embed_dim, 6 * 256 + pooled text width)
# SDXL's first block has no attention: its first cross-attention is in input block 4.
_XL_ATTN2_TO_K = UNET_PREFIX + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
_XL_PROJ_IN = UNET_PREFIX + "input_blocks.4.1.proj_in.weight"

_SD2_REQUIRED = (UNET_PREFIX, VAE_PREFIX, OPEN_CLIP_PREFIX)
_SDXL_REQUIRED = (UNET_PREFIX, VAE_PREFIX, SDXL_CLIP_L_PREFIX, SDXL_OPEN_CLIP_PREFIX)
_SDXL_REFINER_REQUIRED = (UNET_PREFIX, VAE_PREFIX, SDXL_REFINER_OPEN_CLIP_PREFIX)

_REGISTRY: tuple[Architecture, ...] = (
    Architecture(
        name="sd15",
        title="Stable Diffusion 1.x",
        config_dir=MODEL_CONFIGS_DIR / "sd15",
        signature=((_CONV_IN, (320, 4, 3, 3)), (_ATTN2_TO_K, (320, 768))),
        excluded_keys=(_LABEL_EMB,),
    ),
    Architecture(
        name="tiny-sd",
        title="Tiny SD1.x-structured demo model",
        config_dir=MODEL_CONFIGS_DIR / "tiny-sd",
        signature=((_CONV_IN, (32, 4, 3, 3)), (_ATTN2_TO_K, (32, 32))),
        excluded_keys=(_LABEL_EMB,),
    ),
    Architecture(
        name="sd2",
        title="Stable Diffusion 2.x",
        config_dir=MODEL_CONFIGS_DIR / "sd2",
        signature=((_CONV_IN, (320, 4, 3, 3)), (_ATTN2_TO_K, (320, 1024)), (_PROJ_IN, (320, 320))),
        excluded_keys=(_LABEL_EMB,),  # SD 2.x unCLIP: same UNet signature plus an image-embedding MLP
        required_prefixes=_SD2_REQUIRED,
        family="sd2",
        native_resolution=768,
        native_resolution_epsilon=512,
        probe_v_prediction=True,
    ),
    Architecture(
        name="tiny-sd2",
        title="Tiny SD2.x-structured test model",
        config_dir=MODEL_CONFIGS_DIR / "tiny-sd2",
        signature=((_CONV_IN, (32, 4, 3, 3)), (_ATTN2_TO_K, (32, 64)), (_PROJ_IN, (32, 32))),
        excluded_keys=(_LABEL_EMB,),
        required_prefixes=_SD2_REQUIRED,
        family="sd2",
        native_resolution=768,
        native_resolution_epsilon=512,
    ),
    Architecture(
        name="sdxl",
        title="Stable Diffusion XL",
        config_dir=MODEL_CONFIGS_DIR / "sdxl",
        signature=(
            (_CONV_IN, (320, 4, 3, 3)),
            (_LABEL_EMB, (1280, 2816)),
            (_XL_ATTN2_TO_K, (640, 2048)),
            (_XL_PROJ_IN, (640, 640)),
        ),
        required_prefixes=_SDXL_REQUIRED,
        tokenizer_subfolders=("tokenizer", "tokenizer_2"),
        pipeline_class="StableDiffusionXLPipeline",
        family="sdxl",
        native_resolution=1024,
    ),
    Architecture(
        name="tiny-sdxl",
        title="Tiny SDXL-structured test model",
        config_dir=MODEL_CONFIGS_DIR / "tiny-sdxl",
        signature=(
            (_CONV_IN, (32, 4, 3, 3)),
            (_LABEL_EMB, (128, 112)),
            (_XL_ATTN2_TO_K, (64, 96)),
            (_XL_PROJ_IN, (64, 64)),
        ),
        required_prefixes=_SDXL_REQUIRED,
        tokenizer_subfolders=("tokenizer", "tokenizer_2"),
        pipeline_class="StableDiffusionXLPipeline",
        family="sdxl",
        native_resolution=1024,
    ),
    # SDXL's refiner: a 4-level UNet conditioned on OpenCLIP bigG alone and on an aesthetic score
    # (5 time ids), loaded as an img2img pipeline: it only ever continues latents (A1111's refiner).
    Architecture(
        name="sdxl-refiner",
        title="Stable Diffusion XL refiner",
        config_dir=MODEL_CONFIGS_DIR / "sdxl-refiner",
        signature=(
            (_CONV_IN, (384, 4, 3, 3)),
            (_LABEL_EMB, (1536, 2560)),
            (_XL_ATTN2_TO_K, (768, 1280)),
        ),
        required_prefixes=_SDXL_REFINER_REQUIRED,
        tokenizer_subfolders=("tokenizer_2",),
        pipeline_class="StableDiffusionXLImg2ImgPipeline",
        family="sdxl-refiner",
        native_resolution=1024,
    ),
    Architecture(
        name="tiny-sdxl-refiner",
        title="Tiny SDXL-refiner-structured test model",
        config_dir=MODEL_CONFIGS_DIR / "tiny-sdxl-refiner",
        signature=(
            (_CONV_IN, (32, 4, 3, 3)),
            (_LABEL_EMB, (128, 104)),
            (_XL_ATTN2_TO_K, (64, 64)),
        ),
        required_prefixes=_SDXL_REFINER_REQUIRED,
        tokenizer_subfolders=("tokenizer_2",),
        pipeline_class="StableDiffusionXLImg2ImgPipeline",
        family="sdxl-refiner",
        native_resolution=1024,
    ),
)

ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({a.name: a for a in _REGISTRY})


def get_architecture(name: str) -> Architecture:
    """The registered architecture called ``name``."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedCheckpoint(
            f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None


# --------------------------------------------------------------------------- detection


def read_safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a ``.safetensors`` header, without reading any weights."""
    return read_safetensors_header(path)[0]


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor names and shapes, and the ``__metadata__`` strings, from a ``.safetensors`` header."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise UnsupportedCheckpoint(f"{path.name}: too short to be a safetensors file")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len == 0 or header_len > _MAX_HEADER_BYTES:
                raise UnsupportedCheckpoint(f"{path.name}: not a safetensors file (bad header length)")
            raw_header = f.read(header_len)
    except IsADirectoryError:
        raise UnsupportedCheckpoint(f"{path}: is a directory, not a safetensors file") from None
    if len(raw_header) != header_len:
        raise UnsupportedCheckpoint(f"{path.name}: truncated safetensors header")
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UnsupportedCheckpoint(f"{path.name}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise UnsupportedCheckpoint(f"{path.name}: not a safetensors file (header is not an object)")
    shapes: dict[str, tuple[int, ...]] = {}
    metadata: dict[str, str] = {}
    for name, info in header.items():
        if name == "__metadata__":
            if isinstance(info, dict):
                metadata = {str(k): v for k, v in info.items() if isinstance(v, str)}
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise UnsupportedCheckpoint(f"{path.name}: malformed safetensors header entry {name!r}")
        shapes[name] = tuple(int(d) for d in info["shape"])
    return shapes, metadata


def _reject_pickle(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise UnsupportedCheckpoint(
            f"{path.name}: pickle-based checkpoints ({path.suffix}) are not loaded because unpickling "
            "can run arbitrary code; convert it to .safetensors first"
        )


def _diagnose(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A human hint about what an unsupported checkpoint appears to be."""
    if not any(k.startswith(UNET_PREFIX) for k in shapes):
        if any("lora" in k.lower() for k in shapes):
            return "it looks like a LoRA, not a full model"
        if any(k.startswith("conditioner.embedders.") for k in shapes):
            return f"it looks like an SDXL checkpoint without its UNet ({UNET_PREFIX}*)"
        return f"it has no Stable Diffusion UNet ({UNET_PREFIX}*); a VAE, embedding or other add-on?"
    hints: list[str] = []
    if any(k.startswith("conditioner.embedders.") for k in shapes):
        if any(k.startswith(SDXL_REFINER_OPEN_CLIP_PREFIX) for k in shapes) and not any(
            k.startswith(SDXL_OPEN_CLIP_PREFIX) for k in shapes
        ):
            hints.append(
                "it looks like an SDXL refiner checkpoint, but its UNet differs from SDXL refiner 1.0 "
                f"(label_emb {shapes.get(_LABEL_EMB)})"
            )
        else:
            hints.append(
                "it looks like an SDXL checkpoint, but its UNet differs from SDXL base "
                f"(label_emb {shapes.get(_LABEL_EMB)}, cross-attention to_k {shapes.get(_XL_ATTN2_TO_K)})"
            )
    elif any(k.startswith(OPEN_CLIP_PREFIX) for k in shapes):
        hints.append("it looks like a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder)")
        if _LABEL_EMB in shapes:
            hints.append("its UNet has an image-embedding input (an unCLIP model?)")
    conv_in = shapes.get(_CONV_IN)
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        hints.append(f"its UNet takes {conv_in[1]} input channels (an inpainting, depth or other special model?)")
    if not hints:
        hints.append(f"UNet conv_in {conv_in}, cross-attention to_k {shapes.get(_ATTN2_TO_K)}")
    return "; ".join(hints)


def detect_architecture(path: Path) -> Architecture:
    """The architecture of a single-file ``.safetensors`` checkpoint, read from its header only.

    Raises :class:`UnsupportedCheckpoint` for pickle files, non-safetensors files and unknown or
    incomplete models.
    """
    path = Path(path)
    _reject_pickle(path)
    shapes = read_safetensors_shapes(path)
    for arch in _REGISTRY:
        if arch.matches(shapes):
            missing = [p for p in arch.required_prefixes if not any(k.startswith(p) for k in shapes)]
            if missing:
                raise UnsupportedCheckpoint(
                    f"{path.name}: {arch.title} checkpoint without the components "
                    f"{', '.join(p + '*' for p in missing)}"
                )
            return arch
    raise UnsupportedCheckpoint(
        f"{path.name}: unsupported model architecture ({_diagnose(shapes)}); "
        f"supported: {', '.join(a.title for a in _REGISTRY)}"
    )


# --------------------------------------------------------------------------- prediction type

_V_NAMES = frozenset({"v", "v_prediction", "v-prediction", "vpred", "v_pred", "v-pred"})
_EPSILON_NAMES = frozenset({"eps", "epsilon"})
_YAML_PARAMETERIZATION = re.compile(r"^\s*parameterization\s*:\s*[\"']?([A-Za-z_-]+)[\"']?\s*(?:#.*)?$", re.MULTILINE)


def _normalise_prediction_type(value: str) -> str | None:
    value = value.strip().strip("\"'").lower()
    if value in _V_NAMES:
        return "v_prediction"
    if value in _EPSILON_NAMES:
        return "epsilon"
    return None


def declared_prediction_type(path: Path) -> tuple[str, str] | None:
    """What a single-file checkpoint says it predicts, without loading it: ``(prediction_type, source)``.

    Looked up in the order AUTOMATIC1111, ComfyUI and the SAI model spec use, first hit wins:

    1. a companion LDM config next to the file (``model.safetensors`` -> ``model.yaml``, as A1111 reads
       it): ``parameterization: "v"`` means v, any other or no ``parameterization`` means epsilon
       (the LDM default);
    2. the safetensors metadata of the SAI model spec: ``modelspec.prediction_type`` (``v`` or
       ``epsilon``), else a ``modelspec.architecture`` of ``stable-diffusion-v2-768-v`` (v) or
       ``stable-diffusion-v2-512`` (epsilon);
    3. a ``v_pred`` marker tensor (v-prediction SDXL fine-tunes carry one; ComfyUI and A1111 read it).

    ``None`` when the file declares nothing; the caller then probes the UNet or uses the family's default.
    """
    path = Path(path)
    companion = path.with_suffix(".yaml")
    if companion.is_file():
        try:
            text = companion.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = None
        if text is not None:
            match = _YAML_PARAMETERIZATION.search(text)
            declared = _normalise_prediction_type(match[1]) if match else None
            return (declared or "epsilon", f"companion config {companion.name}")
    shapes, metadata = read_safetensors_header(path)
    if declared := _normalise_prediction_type(metadata.get("modelspec.prediction_type", "")):
        return declared, "modelspec.prediction_type metadata"
    spec_architecture = metadata.get("modelspec.architecture", "").strip().lower()
    if spec_architecture.startswith("stable-diffusion-v2-768-v"):
        return "v_prediction", "modelspec.architecture metadata"
    if spec_architecture.startswith("stable-diffusion-v2-512"):
        return "epsilon", "modelspec.architecture metadata"
    if "v_pred" in shapes:
        return "v_prediction", "v_pred marker tensor"
    return None


def unet_predicts_v(unet: torch.nn.Module) -> bool:
    """Whether a trained SD 2.x UNet predicts v, by AUTOMATIC1111's test.

    A1111 (``is_using_v_parameterization_for_sd2``) runs the UNet once on a constant 8x8 latent of 0.5
    at timestep 999 with a constant context of 0.5: an epsilon model returns about the input (its
    noise estimate of an almost pure-noise latent), a v model returns about minus the image, so the
    mean of ``output - input`` falls below -1. Costs one UNet call on an 8x8 latent. Meaningless for
    random weights.
    """
    param = next(unet.parameters())
    config = unet.config
    with torch.no_grad():
        sample = torch.full((1, config.in_channels, 8, 8), 0.5, device=param.device, dtype=param.dtype)
        context = torch.full((1, 2, config.cross_attention_dim), 0.5, device=param.device, dtype=param.dtype)
        timestep = torch.tensor([999], device=param.device)
        out = unet(sample, timestep, encoder_hidden_states=context).sample
        return bool((out.float() - sample.float()).mean().item() < -1)


# --------------------------------------------------------------------------- tokenizer + configs


def _bytes_to_unicode() -> tuple[tuple[int, str], ...]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table, in CLIP's vocabulary order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return tuple((b, chr(c)) for b, c in zip(bs, cs))


def clip_vocab_and_merges(merges_gz: Path = CLIP_MERGES_GZ) -> tuple[dict[str, int], list[str]]:
    """OpenAI CLIP's BPE vocabulary (49,408 entries) and its 48,894 merges, from the shipped merges.

    The vocabulary is derived exactly as CLIP does: the 256 byte symbols, the same with ``</w>``,
    one entry per merge (the concatenated pair), then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    lines = gzip.decompress(Path(merges_gz).read_bytes()).decode("utf-8").split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError(f"{merges_gz}: missing '#version' header line")
    merges = [line for line in lines[1:] if line]
    symbols = [ch for _, ch in _bytes_to_unicode()]
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(merge.split(" ")) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{merges_gz}: merges produce duplicate vocabulary entries")
    return vocab, merges


def _iter_files(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            yield p


def _config_digest(arch: Architecture) -> str:
    h = hashlib.sha256(_MATERIALIZE_FORMAT.encode())
    for p in _iter_files(arch.config_dir):
        h.update(p.relative_to(arch.config_dir).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    h.update(CLIP_MERGES_GZ.read_bytes())
    return h.hexdigest()[:16]


def materialize_config(arch: Architecture, cache_dir: Path) -> Path:
    """A complete diffusers config folder for ``arch`` (configs + tokenizer files, no weights).

    Written atomically under ``cache_dir`` (created if missing) and reused when already present; the
    folder name carries a digest of the shipped files, so edited configs get a fresh folder.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{arch.name}-{_config_digest(arch)}"
    if (target / "model_index.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch.name}-", dir=cache_dir))
    try:
        shutil.copytree(arch.config_dir, tmp, dirs_exist_ok=True)
        vocab, merges = clip_vocab_and_merges()
        vocab_json = json.dumps(vocab, ensure_ascii=False)
        merges_txt = "#version: 0.2\n" + "\n".join(merges) + "\n"
        for sub in arch.tokenizer_subfolders:
            (tmp / sub).mkdir(parents=True, exist_ok=True)
            (tmp / sub / "vocab.json").write_text(vocab_json, encoding="utf-8")
            (tmp / sub / "merges.txt").write_text(merges_txt, encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race (target exists and is non-empty): use theirs.
            if not (target / "model_index.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- loading


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers >= 0.42 renamed ``torch_dtype`` to ``dtype`` (the old name warns); older ones lack it."""
    import diffusers
    from packaging.version import Version

    name = "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"
    return {name: dtype}


def _load_diffusers_folder(path: Path, dtype: torch.dtype) -> DiffusionPipeline:
    import diffusers

    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    kwargs: dict[str, Any] = {"local_files_only": True, **_dtype_kwargs(dtype)}
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return diffusers.DiffusionPipeline.from_pretrained(str(path), **kwargs)


def _single_file_pipeline_kwargs(pipeline_cls: type) -> dict[str, Any]:
    """No safety checker (SD 1.x/2.x) and no invisible watermark (SDXL), where the pipeline has them."""
    params = inspect.signature(pipeline_cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "safety_checker" in params:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if "add_watermarker" in params:
        kwargs["add_watermarker"] = False  # A1111 does not watermark; it would also need invisible-watermark
    return kwargs


def _set_prediction_type(pipe: DiffusionPipeline, arch: Architecture, path: Path, override: str | None) -> None:
    if override is not None:
        chosen, source = override, "caller"
    elif declared := declared_prediction_type(path):
        chosen, source = declared
    elif arch.probe_v_prediction:
        chosen = "v_prediction" if unet_predicts_v(pipe.unet) else "epsilon"
        source = "UNet probe"
    else:
        chosen, source = arch.default_prediction_type, f"{arch.name} default"
    logger.info("%s: %s, predicts %s (%s)", path.name, arch.title, chosen, source)
    if pipe.scheduler.config.get("prediction_type") != chosen:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=chosen)


def load_pipeline(
    path: Path,
    *,
    cache_dir: Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
) -> DiffusionPipeline:
    """Load a checkpoint (single ``.safetensors`` file or diffusers folder) into a pipeline, offline.

    The safety checker and the SDXL watermark are disabled and the progress bar turned off.
    ``cache_dir`` holds the materialised config folders (see :func:`materialize_config`). Raises
    :class:`UnsupportedCheckpoint` for files that are not loadable (pickle, unknown architecture).

    For a single file, the scheduler's ``prediction_type`` is ``prediction_type`` when given
    (``"epsilon"`` or ``"v_prediction"``), else what the file declares (:func:`declared_prediction_type`),
    else, for full-size SD 2.x, the result of :func:`unet_predicts_v`, else the family's shipped
    default (``v_prediction`` for SD 2.x, as diffusers assumes for SD 2.x files without a training
    step count; ``epsilon`` for SD 1.x and SDXL). A diffusers folder keeps its own scheduler config.
    """
    path = Path(path)
    if prediction_type is not None:
        requested = prediction_type
        if (prediction_type := _normalise_prediction_type(requested)) is None:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, not {requested!r}")
    if not path.exists():
        raise FileNotFoundError(path)
    arch: Architecture | None = None
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UnsupportedCheckpoint(f"{path}: a directory without model_index.json is not a diffusers model")
        pipe = _load_diffusers_folder(path, dtype)
    else:
        import diffusers

        arch = detect_architecture(path)
        config = materialize_config(arch, cache_dir)
        pipeline_cls = getattr(diffusers, arch.pipeline_class)
        pipe = pipeline_cls.from_single_file(
            str(path),
            config=str(config),
            local_files_only=True,
            **_single_file_pipeline_kwargs(pipeline_cls),
            **_dtype_kwargs(dtype),
        )
    pipe.to(device)
    if arch is not None:
        _set_prediction_type(pipe, arch, path, prediction_type)
    pipe.set_progress_bar_config(disable=True)
    return pipe
