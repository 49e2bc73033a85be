"""GFPGAN face restoration: the network A1111 runs on aligned face crops (GFPGANv1.3/v1.4 files).

A1111 restores faces with `models/GFPGAN/GFPGANv1.4.pth` (or v1.3): TencentARC's "clean" GFPGAN
(`GFPGANv1Clean`, no compiled CUDA ops). It is a U-Net over the 512x512 face whose bottom gives one
StyleGAN2 latent per decoder layer, and whose upward path gives a scale and a shift per resolution;
a StyleGAN2 generator starts from its constant, and after the first convolution of every resolution
its features (the second half of their channels) are scaled and shifted by those conditions
(spatial feature transform). The net takes RGB in [-1, 1] and returns the restored face the same way.

The architecture is written here rather than taken from a package (gfpgan, basicsr, facexlib and
spandrel all need torchvision, which this project does not install). Parameter names are the
upstream ones, so real files load with `strict=True`. Two choices follow GFPGAN's own inference
helper: the latents skip the decoder's style MLP (kept only so files load), and the U-Net's
intermediate RGB heads (`toRGB`, also kept) are not run. One differs on purpose: the decoder adds
its stored noise maps (`noises.noiseN`) instead of fresh random noise, so a face restores the same
way every time.

`load_gfpgan` reads `.pth` (weights-only unpickler; `params_ema`/`params`/`state_dict` wrappers)
or `.safetensors`, infers size, widths and style width from tensor shapes, and refuses anything
else with a `FaceRestorerError` saying what the file looks like. `write_tiny_gfpgan` writes a
random-weight model of the same architecture, 64x64 and narrow, for tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual name

from runtime.faces import FaceRestorerError
from runtime.weight_files import few, read_tensor_state

_SLOPE = 0.2  # every LeakyReLU in GFPGAN


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE)


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


# --- the U-Net encoder ------------------------------------------------------------------------


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a bilinear resize (0.5 down, 2 up) between them, plus a 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, *, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _leaky(self.conv2(_resize(_leaky(self.conv1(x)), self.factor)))
        return out + self.skip(_resize(x, self.factor))


def _sft_branch(channels: int, out_channels: int) -> nn.Sequential:
    """conv, LeakyReLU, conv: one of `condition_scale.N` / `condition_shift.N`."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(_SLOPE), nn.Conv2d(channels, out_channels, 3, 1, 1)
    )


# --- the StyleGAN2 ("clean") decoder ----------------------------------------------------------


class NormStyleCode(nn.Module):
    """The style MLP's first layer: each code scaled to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's convolution: weights scaled per input channel by the style, optionally demodulated.

    The per-sample weights run as one grouped convolution over the batch. An upsampling layer
    resizes its input 2x bilinearly first, as the clean architecture does (no transposed conv).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int, *,
        demodulate: bool, upsample: bool = False,
    ) -> None:
        super().__init__()
        self.demodulate = demodulate
        self.upsample = upsample
        self.modulation = nn.Linear(num_style_feat, in_channels)
        nn.init.ones_(self.modulation.bias)  # start as a plain convolution
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / fan_in**0.5)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channels = x.shape[:2]
        _, out_channels, _, kernel, _ = self.weight.shape
        weight = self.weight * self.modulation(style).view(batch, 1, in_channels, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if self.upsample:
            x = _resize(x, 2)
        grouped = weight.reshape(batch * out_channels, in_channels, kernel, kernel)  # one group per face
        out = F.conv2d(x.reshape(1, batch * in_channels, *x.shape[2:]), grouped, padding=kernel // 2, groups=batch)
        return out.view(batch, out_channels, *out.shape[2:])


class StyleConv(nn.Module):
    """Modulated 3x3 conv, then noise (`weight` is its strength), bias and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, *, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, demodulate=True,
                                              upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return _leaky(self.modulated_conv(x, style) * 2**0.5 + self.weight * noise + self.bias)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation), added to the previous resolution's RGB upsampled."""

    def __init__(self, in_channels: int, num_style_feat: int) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        return out if skip is None else out + _resize(skip, 2)


class ConstantInput(nn.Module):
    """The decoder's learned 4x4 start (`weight`), the same for every face."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))


class StyleGAN2Decoder(nn.Module):
    """StyleGAN2GeneratorClean with spatial feature transforms (upstream: StyleGAN2GeneratorCSFT).

    `channels[k]` is the width at resolution 4·2^k. Layer latents: `style_conv1` takes 0, `to_rgb1`
    1, and resolution level k ≥ 1 takes 2k-1 (upsampling conv), 2k (second conv), 2k+1 (to RGB).
    Noise map i is 2^((i+5)//2) square: 4x4 for `style_conv1`, then two per resolution.
    """

    def __init__(self, channels: Sequence[int], *, num_style_feat: int, num_mlp: int, sft_half: bool) -> None:
        super().__init__()
        self.sft_half = sft_half
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)  # unused at inference (GFPGAN's latents skip it); kept for loading
        self.constant_input = ConstantInput(channels[0])
        self.style_conv1 = StyleConv(channels[0], channels[0], num_style_feat, upsample=False)
        self.to_rgb1 = ToRGB(channels[0], num_style_feat)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for previous, width in zip(channels, channels[1:], strict=False):
            self.style_convs.append(StyleConv(previous, width, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(width, width, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(width, num_style_feat))
        self.num_layers = 2 * len(channels) - 1
        self.num_latent = 2 * len(channels)
        self.noises = nn.Module()
        for i in range(self.num_layers):
            size = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, size, size))

    def forward(self, latent: torch.Tensor, conditions: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """`latent` (N, num_latent, num_style_feat); one (scale, shift) per resolution above 4x4."""
        noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]
        out = self.constant_input.weight.expand(latent.shape[0], -1, -1, -1)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        rgb = self.to_rgb1(out, latent[:, 1])
        for k, (scale, shift) in enumerate(conditions, start=1):
            conv_up, conv, to_rgb = self.style_convs[2 * k - 2], self.style_convs[2 * k - 1], self.to_rgbs[k - 1]
            out = conv_up(out, latent[:, 2 * k - 1], noise[2 * k - 1])
            if self.sft_half:  # the transform touches the second half of the channels only
                kept, moved = out.chunk(2, dim=1)
                out = torch.cat([kept, moved * scale + shift], dim=1)
            else:
                out = out * scale + shift
            out = conv(out, latent[:, 2 * k], noise[2 * k])
            rgb = to_rgb(out, latent[:, 2 * k + 1], rgb)
        return rgb


# --- the whole network --------------------------------------------------------------------------


def standard_widths(
    out_size: int = 512, *, channel_multiplier: float = 2, narrow: float = 1
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Upstream's channel table: (U-Net widths, decoder widths) per resolution 4, 8, …, out_size.

    The U-Net is half as wide as the decoder ("unet_narrow"); v1.3/v1.4 use the defaults.
    """
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    sizes = [2**i for i in range(2, int(math.log2(out_size)) + 1)]
    return tuple(int(base[s] * narrow * 0.5) for s in sizes), tuple(int(base[s] * narrow) for s in sizes)


class GFPGAN(nn.Module):
    """GFPGANv1Clean with `input_is_latent=True`; `unet_channels`/`decoder_channels` per resolution 4…face_size.

    `different_w` (v1.3/v1.4: True) gives every decoder layer its own latent from `final_linear`;
    `sft_half` (True) transforms half of the decoder's channels.
    """

    face_size: int

    def __init__(
        self,
        unet_channels: Sequence[int],
        decoder_channels: Sequence[int],
        *,
        num_style_feat: int = 512,
        num_mlp: int = 8,
        different_w: bool = True,
        sft_half: bool = True,
    ) -> None:
        super().__init__()
        if len(unet_channels) != len(decoder_channels) or len(unet_channels) < 2:
            raise ValueError("GFPGAN needs one U-Net and one decoder width per resolution 4, 8, …, face_size")
        for unet, decoder in zip(unet_channels[1:], decoder_channels[1:], strict=True):
            if unet * 2 != decoder:
                raise ValueError(f"U-Net width {unet} cannot condition a decoder width {decoder} (needs half of it)")
        self.face_size = 2 ** (len(unet_channels) + 1)
        self.num_style_feat = num_style_feat
        self.different_w = different_w
        u = list(unet_channels)
        self.conv_body_first = nn.Conv2d(3, u[-1], 1)
        self.conv_body_down = nn.ModuleList(ResBlock(u[k], u[k - 1], factor=0.5) for k in range(len(u) - 1, 0, -1))
        self.final_conv = nn.Conv2d(u[0], u[0], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(ResBlock(u[k - 1], u[k], factor=2) for k in range(1, len(u)))
        self.toRGB = nn.ModuleList(nn.Conv2d(u[k], 3, 1) for k in range(1, len(u)))  # noqa: N815 - upstream's name
        self.stylegan_decoder = StyleGAN2Decoder(
            decoder_channels, num_style_feat=num_style_feat, num_mlp=num_mlp, sft_half=sft_half
        )
        latents = self.stylegan_decoder.num_latent if different_w else 1
        self.final_linear = nn.Linear(u[0] * 4 * 4, latents * num_style_feat)
        sft_widths = [u[k] if sft_half else 2 * u[k] for k in range(1, len(u))]
        self.condition_scale = nn.ModuleList(_sft_branch(u[k], w) for k, w in enumerate(sft_widths, start=1))
        self.condition_shift = nn.ModuleList(_sft_branch(u[k], w) for k, w in enumerate(sft_widths, start=1))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(N, 3, face_size, face_size) RGB in [-1, 1] → the restored faces, clamped to [-1, 1]."""
        if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[2:] != (self.face_size, self.face_size):
            raise ValueError(
                f"GFPGAN takes (N, 3, {self.face_size}, {self.face_size}) face crops, not {tuple(faces.shape)}"
            )
        feat = _leaky(self.conv_body_first(faces))
        skips = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.append(feat)
        feat = _leaky(self.final_conv(feat))
        latent = self.final_linear(feat.flatten(1)).view(faces.shape[0], -1, self.num_style_feat)
        if not self.different_w:
            latent = latent.expand(-1, self.stylegan_decoder.num_latent, -1)
        conditions = []
        for up, skip, scale, shift in zip(
            self.conv_body_up, reversed(skips), self.condition_scale, self.condition_shift, strict=True
        ):
            feat = up(feat + skip)
            conditions.append((scale(feat), shift(feat)))
        return self.stylegan_decoder(latent, conditions).clamp(-1, 1)


# --- files --------------------------------------------------------------------------------------

# What other files in a face-restorer folder look like: (a key that marks them, what to call them).
_LOOKALIKES = (
    ("conv_body_first.0.weight", "an original (non-clean) GFPGAN v1 or bilinear model; only GFPGAN v1.2+ "
     '"clean" models are supported (GFPGANv1.3.pth and GFPGANv1.4.pth, the ones A1111 uses)'),
    ("position_emb", "a CodeFormer model; load it as CodeFormer, not GFPGAN"),
    ("quantize.embedding.weight", "a RestoreFormer model, which is not supported"),
    ("conv_first.weight", "an ESRGAN/Real-ESRGAN upscaler; it belongs in the upscaler folders"),
    ("model.0.weight", "an ESRGAN upscaler; it belongs in the upscaler folders"),
    ("ClassHead.0.conv1x1.weight", "facexlib's RetinaFace face detector (detection_Resnet50_Final.pth), "
     "which finds faces but does not restore them"),
    ("out_img_conv.weight", "facexlib's face parsing network (parsing_parsenet.pth), which does not restore faces"),
)


def _identify(name: str, state: Mapping[str, torch.Tensor]) -> None:
    """Raise FaceRestorerError unless the keys are GFPGAN "clean" ones, naming what the file looks like."""
    if "conv_body_first.weight" in state and "stylegan_decoder.constant_input.weight" in state:
        return
    if any(key.startswith("model.diffusion_model.") for key in state):
        raise FaceRestorerError(f"{name} is a Stable Diffusion checkpoint, not a GFPGAN face restoration model")
    for marker, what in _LOOKALIKES:
        if marker in state:
            raise FaceRestorerError(f"{name} is not a GFPGAN face restoration model: it looks like {what}")
    raise FaceRestorerError(
        f"{name} is not a GFPGAN face restoration model (no conv_body_first/stylegan_decoder tensors); "
        "GFPGANv1.3.pth and GFPGANv1.4.pth are supported"
    )


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for key in state if (m := pattern.match(key))})


class _Config(TypedDict):
    unet_channels: list[int]
    decoder_channels: list[int]
    num_style_feat: int
    num_mlp: int
    different_w: bool
    sft_half: bool


def _config(name: str, state: Mapping[str, torch.Tensor]) -> _Config:
    """GFPGAN's constructor arguments, read off the tensors' shapes."""
    convs = "stylegan_decoder.style_convs"
    try:
        levels = _count(state, "conv_body_up.")
        unet = [state["final_conv.weight"].shape[0]]
        unet += [state[f"conv_body_up.{k}.conv2.weight"].shape[0] for k in range(levels)]
        decoder = [state["stylegan_decoder.constant_input.weight"].shape[1]]
        decoder += [state[f"{convs}.{2 * k}.modulated_conv.weight"].shape[1] for k in range(levels)]
        num_style_feat = state["stylegan_decoder.style_conv1.modulated_conv.modulation.weight"].shape[1]
        latents = state["final_linear.weight"].shape[0]
        sft_width = state["condition_scale.0.2.weight"].shape[0]
    except (KeyError, IndexError) as exc:
        raise FaceRestorerError(f"{name} is an incomplete GFPGAN model (no {exc} tensor)") from None
    if levels == 0 or sft_width not in (unet[1], 2 * unet[1]):
        raise FaceRestorerError(f"{name}: {sft_width} SFT channels fit no U-Net width of {unet[1:2]}")
    num_latent = 2 * (levels + 1)
    if latents not in (num_style_feat, num_latent * num_style_feat):
        raise FaceRestorerError(
            f"{name}: final_linear gives {latents} values, neither one nor {num_latent} latents of {num_style_feat}"
        )
    return {
        "unet_channels": unet,
        "decoder_channels": decoder,
        "num_style_feat": num_style_feat,
        "num_mlp": _count(state, "stylegan_decoder.style_mlp."),
        "different_w": latents == num_latent * num_style_feat,
        "sft_half": sft_width == unet[1],
    }


def load_gfpgan(path: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> GFPGAN:
    """A GFPGAN (clean) with the file's weights; its face size and widths come from the tensors.

    Raises FaceRestorerError for files that are not GFPGAN v1.2+ "clean" models (the message says
    what the file looks like when it can tell), FileNotFoundError when there is no file.
    """
    path = Path(path)
    state = read_tensor_state(path, FaceRestorerError)
    _identify(path.name, state)
    config = _config(path.name, state)
    unfit = f"{path.name} does not fit the GFPGAN (clean) architecture"
    try:
        model = GFPGAN(**config)
    except ValueError as exc:
        raise FaceRestorerError(f"{unfit}: {exc}") from None
    expected = model.state_dict()
    if missing := expected.keys() - state.keys():
        raise FaceRestorerError(f"{unfit}: it lacks {few(missing)}")
    if unexpected := state.keys() - expected.keys():
        raise FaceRestorerError(f"{unfit}: unexpected {few(unexpected)}")
    if misshapen := [key for key, tensor in expected.items() if state[key].shape != tensor.shape]:
        raise FaceRestorerError(f"{unfit}: wrong shape for {few(misshapen)}")
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def write_tiny_gfpgan(path: Path, *, face_size: int = 64, seed: int = 0) -> Path:
    """A random-weight GFPGAN (`face_size` square, 4–16 channels, 16-wide styles) as `.pth` or `.safetensors`.

    A `.pth` is wrapped in `params_ema`, as GFPGAN ships. Noise strengths are made non-zero so the
    stored noise maps matter, as they do in trained models. A 64x64 model is about 250 KB.
    """
    from runtime.tiny.model import (
        save_safetensors_atomically,
        write_file_atomically,
    )

    if face_size < 8 or face_size & (face_size - 1):
        raise ValueError(f"face_size must be a power of two ≥ 8, not {face_size}")
    levels = int(math.log2(face_size)) - 1
    decoder = [max(8, 16 >> k) for k in range(levels)]  # 16, 8, 8, … wide
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GFPGAN([w // 2 for w in decoder], decoder, num_style_feat=16, num_mlp=2)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, StyleConv):
                    module.weight.uniform_(0.05, 0.2)
                elif isinstance(module, nn.Conv2d):  # the face steers the output visibly, mostly unclamped
                    nn.init.kaiming_normal_(module.weight, a=_SLOPE).mul_(0.7)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if Path(path).suffix.lower() == ".safetensors":
        return save_safetensors_atomically(state, Path(path))
    return write_file_atomically(Path(path), lambda name: torch.save({"params_ema": state}, name))
