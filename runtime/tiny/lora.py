"""Write tiny LoRA files for the tiny demo model, in the kohya-ss / A1111 key format (tests and demos).

:func:`write_tiny_lora` writes a LoRA with random weights that fits the tiny-sd model written by
:func:`runtime.tiny.model.write_tiny_checkpoint`. Its keys are those kohya-ss' ``sd-scripts``
write for Stable Diffusion 1.x, and that A1111's ``models/Lora`` folder holds::

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight  [rank, in]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight    [out, rank]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha             []
    lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight                          [rank, in, 1, 1]
    lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight                  [rank, in]
    ...

that is ``lora_unet_`` / ``lora_te_`` and the diffusers (UNet) or transformers (CLIP, with its
``text_model.`` segment) module name with dots turned into underscores. The weights are large enough
to change a 64x64 image of the tiny model visibly, at weight 1 and at 0.5.

:func:`write_tiny_sdxl_style_lora` writes a LoRA laid out like an SDXL one (``lora_te1_``/``lora_te2_``
text encoders, LDM-named UNet blocks, SDXL widths) that must be refused by an SD1.x pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from runtime.tiny.model import build_tiny_components, save_safetensors_atomically

__all__ = ["write_tiny_lora", "write_tiny_sdxl_style_lora"]

# The projections kohya-ss trains in a LoRA for SD1.x ("LierLa"): attention, its 1x1 in/out convs, CLIP MLP.
_UNET_TARGET_SUFFIXES = (".to_q", ".to_k", ".to_v", ".to_out.0", ".proj_in", ".proj_out")
_TEXT_ENCODER_TARGET_SUFFIXES = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")
_UP_GAIN = 1.5  # how strong the random LoRA is, relative to a weight of the tiny model


def _targets(module: torch.nn.Module, suffixes: tuple[str, ...]) -> Iterator[tuple[str, torch.nn.Module]]:
    for name, child in module.named_modules():
        if name.endswith(suffixes) and isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
            yield name, child


def _kohya_name(prefix: str, module_name: str) -> str:
    return prefix + module_name.replace(".", "_")


def _lora_pair(
    child: torch.nn.Module, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``lora_down`` and ``lora_up`` weights for one Linear or 1x1 Conv2d."""
    if isinstance(child, torch.nn.Linear):
        fan_in, fan_out, kernel = child.in_features, child.out_features, ()
    else:
        fan_in, fan_out, kernel = child.in_channels, child.out_channels, tuple(child.kernel_size)
    down = torch.randn((rank, fan_in, *kernel), generator=generator) / fan_in**0.5
    up = torch.randn((fan_out, rank, *(1 for _ in kernel)), generator=generator) * (_UP_GAIN / rank**0.5)
    return down, up


def _lora_tensors(
    module: torch.nn.Module, suffixes: tuple[str, ...], prefix: str, rank: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name, child in _targets(module, suffixes):
        key = _kohya_name(prefix, name)
        down, up = _lora_pair(child, rank, generator)
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(rank / 2)  # scale alpha/rank = 0.5, as many trainers use
    return tensors


def _text_encoder_prefix(text_encoder: torch.nn.Module) -> str:
    # transformers 5 flattened CLIPTextModel (no ``text_model`` submodule); LoRA files keep the old names.
    return "lora_te_" if hasattr(text_encoder, "text_model") else "lora_te_text_model_"


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """Save ``tensors`` as float16 safetensors at ``path`` (parents created) via a temporary file."""
    fp16 = {k: v.to(torch.float16).contiguous() for k, v in sorted(tensors.items())}
    return save_safetensors_atomically(fp16, path)


def write_tiny_lora(
    path: Path, *, seed: int = 0, rank: int = 4, text_encoder: bool = True, unet: bool = True
) -> Path:
    """Write a random kohya-format LoRA for the tiny-sd model as float16 ``.safetensors``; returns ``path``.

    ``text_encoder`` / ``unet`` choose which parts the LoRA has. Different seeds give different LoRAs;
    the same seed gives the same file. Written to a temporary name and renamed into place.
    """
    if not (text_encoder or unet):
        raise ValueError("a LoRA needs at least one of text_encoder and unet")
    if rank < 1:
        raise ValueError(f"rank must be at least 1, not {rank}")
    with torch.device("meta"):  # only the layer names and shapes are needed, not weights
        components = build_tiny_components(seed=0)
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    if unet:
        tensors.update(_lora_tensors(components["unet"], _UNET_TARGET_SUFFIXES, "lora_unet_", rank, generator))
    if text_encoder:
        te = components["text_encoder"]
        tensors.update(_lora_tensors(te, _TEXT_ENCODER_TARGET_SUFFIXES, _text_encoder_prefix(te), rank, generator))
    return _save_atomically(tensors, path)


def write_tiny_sdxl_style_lora(path: Path, *, rank: int = 4) -> Path:
    """Write a small LoRA shaped like an SDXL one, which does not fit the tiny SD1.x model; returns ``path``.

    Like kohya-ss' SDXL LoRAs it has two text encoders (``lora_te1_``, ``lora_te2_``, widths 768 and
    1280) and LDM-named UNet blocks (``lora_unet_input_blocks_4_1_...``, width 640). Only a few modules
    are included, so the file stays small.
    """
    generator = torch.Generator().manual_seed(0)
    modules = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (640, 640),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (2048, 640),
    }
    tensors: dict[str, torch.Tensor] = {}
    for key, (fan_in, fan_out) in modules.items():
        tensors[f"{key}.lora_down.weight"] = torch.randn((rank, fan_in), generator=generator) / fan_in**0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn((fan_out, rank), generator=generator) / rank**0.5
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    return _save_atomically(tensors, path)
