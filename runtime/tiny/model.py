"""Build the tiny demo checkpoint: an SD1.x-structured model with random weights, in LDM layout.

The tiny model has Stable Diffusion 1.x's exact structure (4 UNet blocks with 2 layers each,
cross-attention in the first three down and last three up blocks, a 4-block VAE with latent scale
factor 8, a CLIP text encoder over the real 49,408-token vocabulary) but very small widths, so a
512x512 job runs in seconds on a CPU. Its weights are random (deterministic per seed): the images are
noise, but every code path of a real checkpoint is exercised.

:func:`write_tiny_checkpoint` saves it as one A1111-style ``.safetensors`` file in the original LDM
key layout; :func:`write_tiny_vae` saves a tiny-sd VAE alone, as A1111's ``models/VAE`` files are.
The ``*_to_ldm`` functions are the inverse of diffusers' single-file converters for SD1.x, so
loading the file with :func:`runtime.checkpoints.loading.load_pipeline` yields exactly the weights
that were built.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from runtime.checkpoints.loading import TEXT_ENCODER_PREFIX, UNET_PREFIX, VAE_PREFIX, get_architecture

__all__ = [
    "build_tiny_components",
    "components_to_ldm",
    "text_encoder_to_ldm",
    "unet_to_ldm",
    "vae_to_ldm",
    "write_tiny_checkpoint",
    "write_tiny_vae",
]

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


def build_tiny_components(*, seed: int = 0) -> dict[str, torch.nn.Module]:
    """The tiny-sd ``unet``, ``vae`` and ``text_encoder`` with random weights drawn from ``seed``.

    The modules are float32, but every weight is rounded to a float16 value, so the float16 file
    written by :func:`write_tiny_checkpoint` holds them exactly. The global torch RNG is untouched.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config_dir = get_architecture("tiny-sd").config_dir
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(config_dir / "text_encoder" / "config.json"))
    components: dict[str, torch.nn.Module] = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    with torch.no_grad():
        for module in components.values():
            module.eval()
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(torch.float16))  # exactly representable in the fp16 file
    return components


def components_to_ldm(
    components: Mapping[str, torch.nn.Module], *, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """One LDM-layout state dict (cast to ``dtype``) from SD1.x ``unet``, ``vae`` and ``text_encoder``."""
    unet, vae = components["unet"], components["vae"]
    tensors: dict[str, torch.Tensor] = {}
    tensors.update(unet_to_ldm(unet.state_dict(), layers_per_block=unet.config.layers_per_block))
    tensors.update(vae_to_ldm(vae.state_dict(), num_blocks=len(vae.config.block_out_channels)))
    tensors.update(text_encoder_to_ldm(components["text_encoder"].state_dict()))
    return {k: v.detach().to("cpu", dtype=dtype, copy=True).contiguous() for k, v in tensors.items()}


def write_file_atomically(path: Path, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_name)`` beside ``path``, then rename it into place (parents created).

    A crash or error never leaves a half-written file under ``path``. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def save_safetensors_atomically(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save ``tensors`` as safetensors at ``path``, atomically.

    One metadata key by default: safetensors serialises metadata from a hash map, so several keys
    come out in varying order and the same seed would give files with different hashes.
    """
    header = dict(metadata) if metadata else {"format": "pt"}
    return write_file_atomically(path, lambda name: save_file(dict(tensors), name, metadata=header))


def write_tiny_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny-sd demo model (random weights from ``seed``) as one LDM ``.safetensors`` file.

    Weights are stored as float16, like most published SD1.x checkpoints (about 8 MB).

    Parent folders are created; the file is written to a temporary name and renamed into place.
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = components_to_ldm(build_tiny_components(seed=seed))
    return save_safetensors_atomically(tensors, path)


def write_tiny_vae(path: Path, *, seed: int = 1) -> Path:
    """Write a tiny-sd VAE (random weights from ``seed``) as an A1111-style standalone VAE file.

    The file holds bare LDM keys (``encoder.down.0.block.0.conv1.weight``, ..., no
    ``first_stage_model.`` prefix) as float16, like the ``models/VAE/*.safetensors`` files A1111 uses.
    The default seed differs from :func:`write_tiny_checkpoint`'s, so the VAE decodes differently from
    the checkpoint's own. Written atomically like :func:`write_tiny_checkpoint`; returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vae = build_tiny_components(seed=seed)["vae"]
    ldm = vae_to_ldm(vae.state_dict(), num_blocks=len(vae.config.block_out_channels))
    tensors = {
        k.removeprefix(VAE_PREFIX): v.detach().to("cpu", dtype=torch.float16, copy=True).contiguous()
        for k, v in ldm.items()
    }
    return save_safetensors_atomically(tensors, path)
