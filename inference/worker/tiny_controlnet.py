"""Build a tiny random-weight ControlNet that fits the tiny-sd test model, for tests and the demo.

:func:`build_tiny_controlnet` makes a ``ControlNetModel.from_unet`` of a tiny-sd UNet (so its
encoder starts as a copy of that UNet, as a real ControlNet's training does) and then gives random
non-zero weights to the parts a fresh ControlNet has at zero (the "zero convs" that feed the UNet
and the last conv of the hint encoder), so the control image visibly changes the output.
:func:`write_tiny_controlnet` saves it as one float16 ``.safetensors`` file, in the original
lllyasviel/A1111 layout (``control_model.*``) or the diffusers layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoints import get_architecture
from .controlnet import controlnet_to_ldm
from .tiny_model import save_safetensors_atomically

if TYPE_CHECKING:
    from diffusers import ControlNetModel

__all__ = ["build_tiny_controlnet", "write_tiny_controlnet"]

LAYOUTS = ("ldm", "diffusers")


def build_tiny_controlnet(*, seed: int = 0) -> ControlNetModel:
    """The tiny-sd ControlNet with random weights drawn from ``seed`` (float32, eval mode).

    Its encoder copies the tiny-sd UNet built from the same seed (``write_tiny_checkpoint(seed=0)``'s
    UNet for seed 0). Every weight is rounded to a float16 value, so the float16 file holds it
    exactly. The global torch RNG is untouched.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    config_dir = get_architecture("tiny-sd").config_dir
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        controlnet = ControlNetModel.from_unet(unet)
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


def write_tiny_controlnet(path: Path, *, seed: int = 0, layout: str = "ldm") -> Path:
    """Write :func:`build_tiny_controlnet` ``(seed)`` as one float16 ``.safetensors`` file; returns ``path``.

    ``layout="ldm"`` writes the original layout under ``control_model.`` (as A1111's
    ``models/ControlNet`` files); ``layout="diffusers"`` writes diffusers' parameter names. Parent
    folders are created; the file is written under a temporary name and renamed into place.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = build_tiny_controlnet(seed=seed).state_dict()
    if layout == "ldm":
        state = controlnet_to_ldm(state)
    tensors = {k: v.detach().to("cpu", dtype=torch.float16, copy=True).contiguous() for k, v in state.items()}
    return save_safetensors_atomically(tensors, path)
