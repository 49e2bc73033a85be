"""Build tiny random-weight ControlNets that fit the tiny test models, for tests and the demo.

:func:`build_tiny_controlnet` makes a ControlNet for a tiny base model's UNet (``tiny-sd`` or
``tiny-sdxl``) whose encoder starts as a copy of that UNet, as a real ControlNet's training does,
and then gives random non-zero weights to the parts a fresh ControlNet has at zero (the "zero
convs" that feed the UNet and the last conv of the hint encoder), so the control image visibly
changes the output. The tiny SDXL ControlNet is shallower than its UNet by default (fewer
transformer layers per block, like diffusers' ``controlnet-*-sdxl-1.0-mid``/``-small``), so
loaders must read its structure off the weights. :func:`write_tiny_controlnet` saves it as one
float16 ``.safetensors`` file, in the original lllyasviel/A1111/SGM layout (``control_model.*``)
or the diffusers layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from runtime.checkpoints.loading import get_architecture
from runtime.controlnet import controlnet_to_ldm
from runtime.tiny.model import save_safetensors_atomically

if TYPE_CHECKING:
    from diffusers import ControlNetModel

__all__ = ["BASES", "TINY_SDXL_CONTROLNET_DEPTHS", "build_tiny_controlnet", "write_tiny_controlnet"]

LAYOUTS = ("ldm", "diffusers")
BASES = {"sd": "tiny-sd", "sdxl": "tiny-sdxl"}  # base -> the tiny architecture it matches
# Transformer layers per down block of the tiny SDXL ControlNet (its UNet has 1/2/10; the mid
# block takes the last entry). Block 0 has no attention in SDXL, so its entry is unused.
TINY_SDXL_CONTROLNET_DEPTHS = (1, 1, 2)


def build_tiny_controlnet(
    *, seed: int = 0, base: str = "sd", transformer_layers_per_block: Sequence[int] | None = None
) -> ControlNetModel:
    """The tiny ControlNet for ``base`` (``"sd"``: tiny-sd, ``"sdxl"``: tiny-sdxl), random from ``seed``.

    Its encoder copies the base's tiny UNet built from the same seed (the UNet of
    ``write_tiny_checkpoint(seed=0)`` / ``write_tiny_sdxl_checkpoint(seed=0)`` for seed 0) wherever
    the shapes agree. ``transformer_layers_per_block`` overrides the UNet's depths (default: the
    UNet's for ``sd``, :data:`TINY_SDXL_CONTROLNET_DEPTHS` for ``sdxl``; ``(0, 0, 0)`` gives
    attentions without transformer blocks, as diffusers' small SDXL ControlNets). Every weight is
    rounded to a float16 value, so the float16 file holds it exactly; float32, eval mode. The
    global torch RNG is untouched.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; known: {', '.join(BASES)}")
    if transformer_layers_per_block is None and base == "sdxl":
        transformer_layers_per_block = TINY_SDXL_CONTROLNET_DEPTHS
    config_dir = get_architecture(BASES[base]).config_dir
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        if transformer_layers_per_block is None:
            controlnet = ControlNetModel.from_unet(unet)
        else:
            config = dict(ControlNetModel.from_unet(unet, load_weights_from_unet=False).config)
            controlnet = ControlNetModel.from_config(
                {**config, "transformer_layers_per_block": list(transformer_layers_per_block)}
            )
            ours = controlnet.state_dict()
            shared = {k: v for k, v in unet.state_dict().items() if k in ours and ours[k].shape == v.shape}
            controlnet.load_state_dict(shared, strict=False)
        with torch.no_grad():
            zero_initialised = [
                *controlnet.controlnet_down_blocks,
                controlnet.controlnet_mid_block,
                controlnet.controlnet_cond_embedding.conv_out,
            ]
            for conv in zero_initialised:
                fan_in = conv.weight[0].numel()
                conv.weight.normal_(0.0, 1.0 / fan_in**0.5)
                conv.bias.normal_(0.0, 0.1)
    with torch.no_grad():
        for tensor in controlnet.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.float16))  # exactly representable in the fp16 file
    return controlnet.eval()


def write_tiny_controlnet(
    path: Path,
    *,
    seed: int = 0,
    layout: str = "ldm",
    base: str = "sd",
    transformer_layers_per_block: Sequence[int] | None = None,
) -> Path:
    """Write :func:`build_tiny_controlnet` as one float16 ``.safetensors`` file; returns ``path``.

    ``layout="ldm"`` writes the original layout under ``control_model.`` (as A1111's
    ``models/ControlNet`` files; SDXL's size conditioning as ``label_emb``); ``layout="diffusers"``
    writes diffusers' parameter names (as a renamed ``diffusion_pytorch_model.safetensors``).
    Parent folders are created; the file is written under a temporary name and renamed into place.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_tiny_controlnet(seed=seed, base=base, transformer_layers_per_block=transformer_layers_per_block)
    state = model.state_dict()
    if layout == "ldm":
        state = controlnet_to_ldm(state)
    tensors = {k: v.detach().to("cpu", dtype=torch.float16, copy=True).contiguous() for k, v in state.items()}
    return save_safetensors_atomically(tensors, path)
