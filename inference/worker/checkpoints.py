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

Adding an architecture means adding one :class:`Architecture` entry to ``ARCHITECTURES`` and one
config folder under ``model_configs/``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
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
    "Architecture",
    "UnsupportedCheckpoint",
    "clip_vocab_and_merges",
    "detect_architecture",
    "get_architecture",
    "load_pipeline",
    "materialize_config",
    "read_safetensors_shapes",
]

MODEL_CONFIGS_DIR = Path(__file__).resolve().parent / "model_configs"
CLIP_MERGES_GZ = MODEL_CONFIGS_DIR / "clip_tokenizer" / "merges.txt.gz"

# Bump when the layout written by materialize_config changes, so stale cache folders are not reused.
_MATERIALIZE_FORMAT = "1"
_PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
_MAX_HEADER_BYTES = 100 * 1024 * 1024

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model."


class UnsupportedCheckpoint(ValueError):
    """The file is not a checkpoint this worker can load (wrong format or unknown architecture)."""


@dataclass(frozen=True)
class Architecture:
    """A model family that can be loaded from a single LDM-layout ``.safetensors`` file.

    ``signature`` lists tensors (name and exact shape) that a checkpoint of this family must
    contain; all of them must match. ``required_prefixes`` are the components that must be present.
    """

    name: str
    title: str
    config_dir: Path
    signature: tuple[tuple[str, tuple[int, ...]], ...]
    native_resolution: int = 512
    pipeline_class: str = "StableDiffusionPipeline"
    required_prefixes: tuple[str, ...] = (UNET_PREFIX, VAE_PREFIX, TEXT_ENCODER_PREFIX)
    tokenizer_subfolders: tuple[str, ...] = ("tokenizer",)

    def matches(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """Whether a checkpoint with these tensor shapes belongs to this architecture."""
        return all(shapes.get(key) == shape for key, shape in self.signature)


_ATTN2_TO_K = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"

_REGISTRY: tuple[Architecture, ...] = (
    Architecture(
        name="sd15",
        title="Stable Diffusion 1.x",
        config_dir=MODEL_CONFIGS_DIR / "sd15",
        signature=((_CONV_IN, (320, 4, 3, 3)), (_ATTN2_TO_K, (320, 768))),
    ),
    Architecture(
        name="tiny-sd",
        title="Tiny SD1.x-structured demo model",
        config_dir=MODEL_CONFIGS_DIR / "tiny-sd",
        signature=((_CONV_IN, (32, 4, 3, 3)), (_ATTN2_TO_K, (32, 32))),
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
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise UnsupportedCheckpoint(f"{path.name}: malformed safetensors header entry {name!r}")
        shapes[name] = tuple(int(d) for d in info["shape"])
    return shapes


def _reject_pickle(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise UnsupportedCheckpoint(
            f"{path.name}: pickle-based checkpoints ({path.suffix}) are not loaded because unpickling "
            "can run arbitrary code; convert it to .safetensors first"
        )


def _diagnose(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A human hint about what an unsupported checkpoint appears to be."""
    if any(k.startswith("conditioner.embedders.") for k in shapes):
        return "it looks like an SDXL checkpoint"
    if any(k.startswith("cond_stage_model.model.") for k in shapes):
        return "it looks like a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder)"
    conv_in = shapes.get(_CONV_IN)
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        return f"its UNet takes {conv_in[1]} input channels (an inpainting or other special model?)"
    if not any(k.startswith(UNET_PREFIX) for k in shapes):
        if any("lora" in k.lower() for k in shapes):
            return "it looks like a LoRA, not a full model"
        return f"it has no Stable Diffusion UNet ({UNET_PREFIX}*); a VAE, embedding or other add-on?"
    return f"UNet conv_in {conv_in}, cross-attention to_k {shapes.get(_ATTN2_TO_K)}"


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


def load_pipeline(
    path: Path,
    *,
    cache_dir: Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DiffusionPipeline:
    """Load a checkpoint (single ``.safetensors`` file or diffusers folder) into a pipeline, offline.

    The safety checker is disabled and the progress bar turned off. ``cache_dir`` holds the
    materialised config folders (see :func:`materialize_config`). Raises
    :class:`UnsupportedCheckpoint` for files that are not loadable (pickle, unknown architecture).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
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
            safety_checker=None,
            requires_safety_checker=False,
            **_dtype_kwargs(dtype),
        )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
