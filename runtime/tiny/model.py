"""Build the tiny demo checkpoint: an SD1.x-structured model with random weights, in LDM layout.

The tiny model has Stable Diffusion 1.x's exact structure (4 UNet blocks with 2 layers each,
cross-attention in the first three down and last three up blocks, a 4-block VAE with latent scale
factor 8, a CLIP text encoder over the real 49,408-token vocabulary) but very small widths, so a
512x512 job runs in seconds on a CPU. Its weights are random (deterministic per seed): the images are
noise, but every code path of a real checkpoint is exercised.

:func:`write_tiny_checkpoint` saves it as one A1111-style ``.safetensors`` file in the original LDM
key layout; :func:`write_tiny_vae` saves a tiny-sd VAE alone, as A1111's ``models/VAE`` files are.
The ``*_to_ldm`` functions (:mod:`runtime.checkpoints.ldm_keys`, re-exported here) are the inverse of diffusers' single-file converters for SD1.x, so
loading the file with :func:`runtime.checkpoints.loading.load_pipeline` yields exactly the weights
that were built.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from runtime.checkpoints.ldm_keys import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from runtime.checkpoints.loading import (
    VAE_PREFIX,
    get_architecture,
)

__all__ = [
    "build_tiny_components",
    "components_to_ldm",
    "text_encoder_to_ldm",
    "unet_to_ldm",
    "vae_to_ldm",
    "write_tiny_checkpoint",
    "write_tiny_vae",
]

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


def write_folder_atomically(folder: Path, save: Callable[[Path], None]) -> Path:
    """Call ``save(staging_folder)`` beside ``folder``, then rename it into place, replacing one
    already there: a model folder as an operator copies it (folder 0755, files 0644, readable by
    the workers' account). A crash or error never leaves a half-written folder. Returns ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        save(staging)
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


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
