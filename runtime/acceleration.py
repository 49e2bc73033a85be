"""How a worker makes its pipelines fast: attention kernel, memory format, torch.compile, VAE slicing/tiling.

These are PAI's `--xformers` / `--blade` switches, as worker settings (`ATELIER_WORKER_*`, see
README "Configuration"). They never change what an image looks like beyond floating-point noise:
the same seed gives the same picture with or without them.

* **attention**: `auto` uses xformers' memory-efficient kernel on CUDA when the package imports
  and works, else PyTorch's scaled-dot-product attention (SDPA, FlashAttention on recent GPUs,
  which is diffusers' default on torch 2); `sdpa` and `xformers` force one (xformers falls back to
  SDPA with a warning when it cannot run).
* **channels_last**: the UNet's convolutions in NHWC. Off by default: on an H100 with SDPA it
  cost 1-13% of SD1.5's speed (bench/results/h100-2026-11-27); older cards may gain from it.
* **compile**: `torch.compile` of the UNet's forward in place (`nn.Module.compile`, so LoRA and
  hypernetwork hooks still find the module), with the given mode. On an H100 it made SD1.5's
  denoising 1.4x (batch 8) to 1.9x (batch 1) faster, but the first batch of every new shape
  (size, batch size) waits about a minute for compilation; off by default, because members ask
  for many sizes. Turn it on for workers that serve a few fixed sizes.
* **VAE slicing** decodes a batch one image at a time from `vae_slicing_from_batch` images;
  **VAE tiling** decodes in overlapping tiles from `vae_tiling_from_pixels` pixels per image.
  Both cap the decoder's peak memory, so hires fixes and big batches fit on small cards.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import diffusers
import torch

logger = logging.getLogger(__name__)

ATTENTION_CHOICES = ("auto", "sdpa", "xformers")
SWITCH_CHOICES = ("on", "off")
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class AccelerationSettingError(ValueError):
    """A worker setting with a value it cannot take (raised when the worker starts)."""


@dataclass(frozen=True)
class Acceleration:
    attention: str = "auto"
    channels_last: str = "off"
    compile_mode: str = ""  # "" is off
    vae_slicing_from_batch: int = 8  # 0 is never
    vae_tiling_from_pixels: int = 1536 * 1536  # width x height of one image; 0 is never

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_CHOICES:
            raise AccelerationSettingError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, not {self.attention!r}")
        if self.channels_last not in SWITCH_CHOICES:
            raise AccelerationSettingError(f"channels_last must be one of {', '.join(SWITCH_CHOICES)}, not {self.channels_last!r}")
        if self.compile_mode not in COMPILE_MODES:
            modes = ", ".join(mode for mode in COMPILE_MODES if mode)
            raise AccelerationSettingError(f"compile mode must be empty (off) or one of {modes}, not {self.compile_mode!r}")
        if self.vae_slicing_from_batch < 0 or self.vae_tiling_from_pixels < 0:
            raise AccelerationSettingError("VAE slicing and tiling thresholds must be 0 (never) or positive")


def xformers_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None


def apply_to_pipeline(pipeline: diffusers.DiffusionPipeline, acceleration: Acceleration, device: torch.device) -> dict[str, str]:
    """Set a freshly loaded pipeline up for speed, once (the cache keeps it so). Returns what was done."""
    applied: dict[str, str] = {"attention": _set_attention(pipeline, acceleration.attention, device)}
    if acceleration.channels_last == "on":
        pipeline.unet.to(memory_format=torch.channels_last)
        applied["unet_memory_format"] = "channels_last"
    if acceleration.compile_mode:
        pipeline.unet.compile(mode=acceleration.compile_mode, dynamic=False)
        applied["compile"] = acceleration.compile_mode
    return applied


def _set_attention(pipeline: diffusers.DiffusionPipeline, choice: str, device: torch.device) -> str:
    from diffusers.models.attention_processor import AttnProcessor2_0

    if choice == "xformers" or (choice == "auto" and device.type == "cuda" and xformers_installed()):
        try:
            pipeline.enable_xformers_memory_efficient_attention()
            return "xformers"
        except Exception as exc:  # noqa: BLE001 - a broken or missing xformers build must not stop the worker
            if choice == "xformers":
                logger.warning("xformers attention unavailable (%s: %s); using SDPA", type(exc).__name__, exc)
    pipeline.unet.set_attn_processor(AttnProcessor2_0())
    return "sdpa"


def configure_vae(vae: diffusers.AutoencoderKL, acceleration: Acceleration, *, batch: int, width: int, height: int) -> None:
    """Slicing and tiling for one pipeline call (the VAE is shared by every call: set both ways each time)."""
    if acceleration.vae_slicing_from_batch and batch >= acceleration.vae_slicing_from_batch:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
    if acceleration.vae_tiling_from_pixels and width * height >= acceleration.vae_tiling_from_pixels:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
