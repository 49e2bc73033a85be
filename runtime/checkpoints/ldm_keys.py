"""diffusers → original LDM (A1111) state-dict key names: the inverse of diffusers' single-file converters.

Production code uses them to read ControlNets and VAEs shipped in the diffusers layout; the tiny
test models (:mod:`runtime.tiny`) use them to write their checkpoints in the LDM layout. They live
here, not in ``runtime/tiny/``, so no production loader imports the test-model builders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from runtime.checkpoints.loading import TEXT_ENCODER_PREFIX, UNET_PREFIX, VAE_PREFIX

__all__ = ["text_encoder_to_ldm", "unet_to_ldm", "vae_to_ldm"]

_UNET_RESNET_RENAMES = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
_UNET_FIXED = (
    ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."),
    ("add_embedding.linear_1.", "label_emb.0.0."),  # SDXL's size/crop/pooled-text conditioning MLP
    ("add_embedding.linear_2.", "label_emb.0.2."),
    ("conv_in.", "input_blocks.0.0."),
    ("conv_norm_out.", "out.0."),
    ("conv_out.", "out.2."),
)
SD1_UP_BLOCKS_WITH_ATTENTION = frozenset({1, 2, 3})  # SD 1.x: every up block but the first
_VAE_ATTN_RENAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def _resnet_rest(rest: str) -> str:
    for old, new in _UNET_RESNET_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _unet_key_to_ldm(key: str, *, layers_per_block: int, up_blocks_with_attention: frozenset[int]) -> str:
    per = layers_per_block + 1  # LDM input/output block slots per diffusers block
    for old, new in _UNET_FIXED:
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"input_blocks.{per * int(m[1]) + int(m[2]) + 1}.0.{_resnet_rest(m[3])}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"input_blocks.{per * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{per * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_rest(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"output_blocks.{per * int(m[1]) + int(m[2])}.0.{_resnet_rest(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"output_blocks.{per * int(m[1]) + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        i = int(m[1])
        slot = 2 if i in up_blocks_with_attention else 1  # the upsampler follows the resnet (and attention)
        return f"output_blocks.{per * i + per - 1}.{slot}.{m[2]}"
    raise ValueError(f"no LDM name for UNet parameter {key!r}")


def unet_to_ldm(
    state: Mapping[str, torch.Tensor],
    *,
    layers_per_block: int = 2,
    up_blocks_with_attention: frozenset[int] = SD1_UP_BLOCKS_WITH_ATTENTION,
) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict under LDM names (SD 1.x layout by default;
    :func:`runtime.tiny.families.unet_to_ldm` reads the layout off any UNet's config)."""
    return {
        UNET_PREFIX
        + _unet_key_to_ldm(k, layers_per_block=layers_per_block, up_blocks_with_attention=up_blocks_with_attention): v
        for k, v in state.items()
    }


def _vae_key_to_ldm(key: str, num_blocks: int) -> str:
    key = key.replace("conv_shortcut.", "nin_shortcut.").replace("conv_norm_out.", "norm_out.")
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        rest = m[2]
        for old, new in _VAE_ATTN_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        return f"{m[1]}.mid.attn_1.{rest}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if re.fullmatch(r"(encoder\.|decoder\.)?(conv_in|conv_out|norm_out|quant_conv|post_quant_conv)\.(weight|bias)", key):
        return key
    raise ValueError(f"no LDM name for VAE parameter {key!r}")


def vae_to_ldm(state: Mapping[str, torch.Tensor], *, num_blocks: int = 4) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict under LDM names (attention projections as 1x1 convs)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        name = _vae_key_to_ldm(k, num_blocks)
        if ".mid.attn_1." in name and name.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]
        out[VAE_PREFIX + name] = v
    return out


def text_encoder_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel`` state dict under LDM names.

    transformers 5 dropped the ``text_model.`` segment from ``CLIPTextModel`` keys; LDM checkpoints
    (and diffusers' detection of them) need it, so it is put back.
    """
    prefix = TEXT_ENCODER_PREFIX + "transformer.text_model."
    return {prefix + k.removeprefix("text_model."): v for k, v in state.items()}
