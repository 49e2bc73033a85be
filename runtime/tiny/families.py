"""Tiny SD 2.x- and SDXL-structured checkpoints with random weights, in the original LDM/SGM layout.

The companions of :mod:`runtime.tiny.model` (SD 1.x) for the two other model families the
worker loads. Each tiny model keeps its family's exact structure and key layout and shrinks only the
widths, so tests exercise the real single-file loading path (detection, config folder, diffusers'
converters, the right pipeline class) in seconds on a CPU:

* ``tiny-sd2``: SD 2.x's UNet (linear ``proj_in``/``proj_out``, per-block head counts, upcast
  attention), a 4-block VAE and an OpenCLIP text tower stored as OpenCLIP stores it
  (``cond_stage_model.model.transformer.resblocks.N.attn.in_proj_weight``, ...). Like a real SD 2.x
  file, the tower holds one residual block more than the diffusers text encoder uses (SD 2.x
  conditions on the penultimate layer), and the shipped scheduler predicts ``v``.
* ``tiny-sdxl-refiner``: SDXL refiner's layout (a 4-level UNet with 5 size/crop/aesthetic time ids,
  one OpenCLIP-bigG-style tower under ``conditioner.embedders.0.model.*``), loaded as an img2img
  pipeline; the tiny-sdxl's VAE and second encoder shapes, so it refines tiny-sdxl's latents.
* ``tiny-sdxl``: SDXL base's 3-block UNet (no attention in the first block, transformer depths
  1/2/10, the ``label_emb`` size/crop conditioning MLP), a 4-block VAE, a CLIP-L-style text encoder
  under ``conditioner.embedders.0.transformer.text_model.*`` and an OpenCLIP-bigG-style tower with
  its text projection under ``conditioner.embedders.1.model.*``. The two encoders have different
  widths, as CLIP-L and bigG do: diffusers tells them apart by width.

The ``*_to_ldm`` functions are the inverse of diffusers' single-file converters, so loading a file
written here with :func:`runtime.checkpoints.loading.load_pipeline` yields exactly the weights that
were built (every weight is rounded to a float16 value first, and the file stores float16).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from runtime.checkpoints.loading import get_architecture
from runtime.tiny import model as tiny_model
from runtime.tiny.model import save_safetensors_atomically, vae_to_ldm

__all__ = [
    "SD2_TEXT_PREFIX",
    "SDXL_TEXT_PREFIX",
    "SDXL_TEXT_2_PREFIX",
    "build_tiny_sd2_components",
    "build_tiny_sdxl_components",
    "build_tiny_sdxl_refiner_components",
    "clip_to_ldm",
    "ldm_shapes_for_architecture",
    "open_clip_to_ldm",
    "sd2_components_to_ldm",
    "sdxl_components_to_ldm",
    "sdxl_refiner_components_to_ldm",
    "unet_to_ldm",
    "write_tiny_sd2_checkpoint",
    "write_tiny_sdxl_checkpoint",
    "write_tiny_sdxl_refiner_checkpoint",
]

SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_TEXT_2_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."

_OPEN_CLIP_LAYER_RENAMES = (
    ("self_attn.out_proj.", "attn.out_proj."),
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)


# --------------------------------------------------------------------------- UNet


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict under LDM names, for any SD 1.x/2.x/XL layout.

    ``config`` is the UNet's config (``unet.config``): the block types say which up blocks carry
    attention, which moves their upsampler from LDM slot 1 to slot 2.
    """
    with_attention = frozenset(i for i, t in enumerate(config["up_block_types"]) if "CrossAttn" in t)
    return tiny_model.unet_to_ldm(
        state, layers_per_block=int(config["layers_per_block"]), up_blocks_with_attention=with_attention
    )


# --------------------------------------------------------------------------- text encoders


def clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel`` state dict in the OpenAI-CLIP/HF layout used by SD 1.x and SDXL.

    ``prefix`` ends in ``text_model.``, which transformers 5 no longer puts in the keys.
    """
    return {prefix + k.removeprefix("text_model."): v for k, v in state.items()}


def open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's state dict under OpenCLIP names (``prefix`` + ``transformer.resblocks...``).

    The inverse of diffusers' ``convert_open_clip_checkpoint``: q/k/v projections are concatenated
    into ``attn.in_proj_weight``/``in_proj_bias``; a ``text_projection.weight`` (``CLIPTextModelWithProjection``)
    is stored transposed as OpenCLIP's ``text_projection`` matrix.
    """
    flat = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(m[1]) for k in flat if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [flat.pop(f"{src}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")], dim=0
            )
        for key in [k for k in flat if k.startswith(src)]:
            rest = key[len(src) :]
            for old, new in _OPEN_CLIP_LAYER_RENAMES:
                if rest.startswith(old):
                    out[dst + new + rest[len(old) :]] = flat.pop(key)
                    break
            else:
                raise ValueError(f"no OpenCLIP name for text encoder parameter {key!r}")
    renames = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    }
    for old, new in renames.items():
        out[prefix + new] = flat.pop(old)
    if "text_projection.weight" in flat:
        out[prefix + "text_projection"] = flat.pop("text_projection.weight").T.contiguous()
    if flat:
        raise ValueError(f"no OpenCLIP name for text encoder parameters {sorted(flat)}")
    return out


# --------------------------------------------------------------------------- building


def _config_dir(name: str) -> Path:
    return get_architecture(name).config_dir


def _round_to_fp16(modules: Mapping[str, torch.nn.Module]) -> None:
    with torch.no_grad():
        for module in modules.values():
            module.eval()
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(torch.float16))  # exactly representable in the fp16 file


def _build_unet_and_vae(config_dir: Path) -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    return {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae")),
    }


def _text_config(config_dir: Path, subfolder: str, **overrides: Any):
    from transformers import CLIPTextConfig

    config = CLIPTextConfig.from_json_file(config_dir / subfolder / "config.json")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _sd2_tower_config(config_dir: Path):
    """The OpenCLIP tower an SD 2.x file stores: one block more than the text encoder, a square projection."""
    text_config = _text_config(config_dir, "text_encoder")
    return _text_config(
        config_dir,
        "text_encoder",
        num_hidden_layers=text_config.num_hidden_layers + 1,
        projection_dim=text_config.hidden_size,
    )


def build_tiny_sd2_components(*, seed: int = 0, architecture: str = "tiny-sd2") -> dict[str, torch.nn.Module]:
    """``unet``, ``vae``, ``text_encoder`` and the OpenCLIP ``text_tower`` of an SD 2.x-structured model.

    ``text_tower`` (a ``CLIPTextModelWithProjection``) is what an SD 2.x checkpoint stores: one
    residual block more than ``text_encoder`` and a text projection, all other weights shared;
    ``text_encoder`` is what diffusers loads from it. Weights are random from ``seed`` and rounded to
    float16 values; the global torch RNG is untouched.
    """
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config_dir = _config_dir(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components = _build_unet_and_vae(config_dir)
        components["text_tower"] = CLIPTextModelWithProjection(_sd2_tower_config(config_dir))
    _round_to_fp16(components)
    text_encoder = CLIPTextModel(_text_config(config_dir, "text_encoder"))
    tower_state = {k.removeprefix("text_model."): v for k, v in components["text_tower"].state_dict().items()}
    missing, _ = text_encoder.load_state_dict(tower_state, strict=False)  # all but the last block and projection
    if missing:
        raise RuntimeError(f"text tower lacks {missing}")
    text_encoder.eval()
    components["text_encoder"] = text_encoder
    return components


def build_tiny_sdxl_components(*, seed: int = 0, architecture: str = "tiny-sdxl") -> dict[str, torch.nn.Module]:
    """``unet``, ``vae``, ``text_encoder`` (CLIP-L style) and ``text_encoder_2`` (bigG style) of an SDXL model.

    Random weights from ``seed``, rounded to float16 values; the global torch RNG is untouched.
    """
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config_dir = _config_dir(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components = _build_unet_and_vae(config_dir)
        components["text_encoder"] = CLIPTextModel(_text_config(config_dir, "text_encoder"))
        components["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(config_dir, "text_encoder_2"))
    _round_to_fp16(components)
    return components


def build_tiny_sdxl_refiner_components(*, seed: int = 0, architecture: str = "tiny-sdxl-refiner") -> dict[str, torch.nn.Module]:
    """``unet``, ``vae`` and ``text_encoder_2`` (bigG style, the only one) of an SDXL refiner.

    Random weights from ``seed``, rounded to float16 values; the global torch RNG is untouched.
    """
    from transformers import CLIPTextModelWithProjection

    config_dir = _config_dir(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components = _build_unet_and_vae(config_dir)
        components["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(config_dir, "text_encoder_2"))
    _round_to_fp16(components)
    return components


# --------------------------------------------------------------------------- LDM state dicts

# OpenCLIP's trained logit scale, ln(100); stored by real checkpoints, unused for generation.
_LOGIT_SCALE = 4.6052


def _cast(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:  # shapes only (meta tensors)
        return dict(tensors)
    return {k: v.detach().to("cpu", dtype=dtype, copy=True).contiguous() for k, v in tensors.items()}


def _unet_vae_to_ldm(components: Mapping[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    unet, vae = components["unet"], components["vae"]
    return {
        **unet_to_ldm(unet.state_dict(), unet.config),
        **vae_to_ldm(vae.state_dict(), num_blocks=len(vae.config.block_out_channels)),
    }


def sd2_components_to_ldm(
    components: Mapping[str, torch.nn.Module], *, dtype: torch.dtype | None = torch.float16
) -> dict[str, torch.Tensor]:
    """One SD 2.x LDM state dict from ``unet``, ``vae`` and ``text_tower`` (else ``text_encoder``).

    The OpenCLIP tower goes under ``cond_stage_model.model.`` as a real SD 2.x file holds it: every
    block, ``text_projection`` and ``logit_scale``.
    """
    tower = components["text_tower"] if "text_tower" in components else components["text_encoder"]
    device = next(tower.parameters()).device
    tensors = _unet_vae_to_ldm(components)
    tensors.update(open_clip_to_ldm(tower.state_dict(), SD2_TEXT_PREFIX))
    tensors[SD2_TEXT_PREFIX + "logit_scale"] = torch.tensor(_LOGIT_SCALE, device=device)
    return _cast(tensors, dtype)


def sdxl_components_to_ldm(
    components: Mapping[str, torch.nn.Module], *, dtype: torch.dtype | None = torch.float16
) -> dict[str, torch.Tensor]:
    """One SDXL (SGM layout) state dict from ``unet``, ``vae``, ``text_encoder`` and ``text_encoder_2``."""
    text_encoder_2 = components["text_encoder_2"]
    tensors = _unet_vae_to_ldm(components)
    tensors.update(clip_to_ldm(components["text_encoder"].state_dict(), SDXL_TEXT_PREFIX))
    tensors.update(open_clip_to_ldm(text_encoder_2.state_dict(), SDXL_TEXT_2_PREFIX))
    tensors[SDXL_TEXT_2_PREFIX + "logit_scale"] = torch.tensor(_LOGIT_SCALE, device=next(text_encoder_2.parameters()).device)
    return _cast(tensors, dtype)


def sdxl_refiner_components_to_ldm(
    components: Mapping[str, torch.nn.Module], *, dtype: torch.dtype | None = torch.float16
) -> dict[str, torch.Tensor]:
    """One SDXL refiner (SGM layout) state dict from ``unet``, ``vae`` and ``text_encoder_2``: the
    bigG tower under ``conditioner.embedders.0.model.``, as sd_xl_refiner_1.0.safetensors holds it."""
    text_encoder_2 = components["text_encoder_2"]
    tensors = _unet_vae_to_ldm(components)
    tensors.update(open_clip_to_ldm(text_encoder_2.state_dict(), SDXL_REFINER_TEXT_PREFIX))
    tensors[SDXL_REFINER_TEXT_PREFIX + "logit_scale"] = torch.tensor(
        _LOGIT_SCALE, device=next(text_encoder_2.parameters()).device
    )
    return _cast(tensors, dtype)


def components_to_single_file(
    components: Mapping[str, torch.nn.Module], *, dtype: torch.dtype | None = torch.float16
) -> dict[str, torch.Tensor]:
    """One SD 1.x LDM state dict from ``unet``, ``vae`` and ``text_encoder`` of any size (e.g. full SD 1.5)."""
    from runtime.tiny.model import text_encoder_to_ldm

    tensors = _unet_vae_to_ldm(components)
    tensors.update(text_encoder_to_ldm(components["text_encoder"].state_dict()))
    return _cast(tensors, dtype)


def ldm_shapes_for_architecture(name: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a single-file checkpoint of architecture ``name``, from its shipped configs.

    The modules are built on the meta device (nothing is allocated), so this works for the full-size
    families too; use it to check a registry signature against its config folder.
    """
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    arch = get_architecture(name)
    config_dir = arch.config_dir
    with torch.device("meta"):
        components = _build_unet_and_vae(config_dir)
        if arch.family == "sdxl-refiner":
            components["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(config_dir, "text_encoder_2"))
            tensors = sdxl_refiner_components_to_ldm(components, dtype=None)
        elif arch.family == "sdxl":
            components["text_encoder"] = CLIPTextModel(_text_config(config_dir, "text_encoder"))
            components["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(config_dir, "text_encoder_2"))
            tensors = sdxl_components_to_ldm(components, dtype=None)
        elif arch.family == "sd2":
            components["text_tower"] = CLIPTextModelWithProjection(_sd2_tower_config(config_dir))
            tensors = sd2_components_to_ldm(components, dtype=None)
        else:
            components["text_encoder"] = CLIPTextModel(_text_config(config_dir, "text_encoder"))
            tensors = components_to_single_file(components, dtype=None)
    return {k: tuple(v.shape) for k, v in tensors.items()}


# --------------------------------------------------------------------------- writing


def write_tiny_sd2_checkpoint(path: Path, seed: int = 0, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the tiny-sd2 model (random weights from ``seed``) as one SD 2.x LDM ``.safetensors`` file.

    float16, about 12 MB (mostly the 49,408-token embedding); written to a temporary name and renamed into place. ``metadata`` replaces the
    default header metadata (e.g. ``{"modelspec.prediction_type": "epsilon"}``). Returns ``path``.
    """
    return save_safetensors_atomically(sd2_components_to_ldm(build_tiny_sd2_components(seed=seed)), path, metadata)


def write_tiny_sdxl_checkpoint(path: Path, seed: int = 0, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the tiny-sdxl model (random weights from ``seed``) as one SDXL (SGM layout) ``.safetensors`` file.

    float16, about 26 MB; written atomically like :func:`write_tiny_sd2_checkpoint`. Returns ``path``.
    """
    return save_safetensors_atomically(sdxl_components_to_ldm(build_tiny_sdxl_components(seed=seed)), path, metadata)


def write_tiny_sdxl_refiner_checkpoint(path: Path, seed: int = 0, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the tiny-sdxl-refiner model (random weights from ``seed``) as one SDXL refiner
    (SGM layout) ``.safetensors`` file, float16, written atomically. Returns ``path``."""
    return save_safetensors_atomically(
        sdxl_refiner_components_to_ldm(build_tiny_sdxl_refiner_components(seed=seed)), path, metadata
    )
