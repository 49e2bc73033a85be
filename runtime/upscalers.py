"""Model upscalers: ESRGAN and Real-ESRGAN (RRDBNet) files from the ESRGAN model folders.

A1111 lists them as hires-fix upscalers ("R-ESRGAN 4x+", or a file's own name for ESRGAN
files). Both file layouts load: BasicSR's (`conv_first`, `body.N.rdb1…`, as Real-ESRGAN ships,
possibly under `params_ema`) and the original ESRGAN one (`model.0`, `model.1.sub.N.RDB1…`).
Real-ESRGAN's 2x and 1x models feed the network a pixel-unshuffled image; that is read off the
first convolution's input width. `.pth` files are read with torch's weights-only unpickler.

The architecture is written here (about sixty lines) rather than taken from a package: the
packages that carry it need torchvision, which this project does not install.
`write_tiny_esrgan` writes a random-weight model of the same architecture for tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual name

from a1111.upscalers import A1111_ALIASES  # noqa: F401 - re-exported: the name table lives in a1111
from runtime.weight_files import read_tensor_state


class UpscalerError(ValueError):
    """The file is not an upscaler this platform can run (the message says why)."""


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator: RRDB trunk, then two nearest-neighbour 2x upsamplings (4x in all)."""

    def __init__(self, *, scale: int, num_feat: int, num_block: int, num_grow_ch: int) -> None:
        super().__init__()
        self.scale = scale
        unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.unshuffle = unshuffle
        self.conv_first = nn.Conv2d(3 * unshuffle * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


_OLD_LAYERS = {"model.0.": "conv_first.", "model.3.": "conv_up1.", "model.6.": "conv_up2.", "model.8.": "conv_hr.",
               "model.10.": "conv_last."}
_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TRUNK_END = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")


def _from_old_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original ESRGAN names (`model.1.sub.N.RDB1.conv1.0.weight`) → BasicSR's."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if body := _OLD_BODY.match(key):
            block, rdb, conv, kind = body.groups()
            renamed[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        elif trunk := _OLD_TRUNK_END.match(key):
            renamed[f"conv_body.{trunk.group(2)}"] = value
        else:
            prefix = next((old for old in _OLD_LAYERS if key.startswith(old)), None)
            if prefix is None:
                raise UpscalerError(f"unexpected tensor {key!r} for an ESRGAN model")
            renamed[_OLD_LAYERS[prefix] + key.removeprefix(prefix)] = value
    return renamed


def load_upscaler(path: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> RRDBNet:
    """An RRDBNet with the file's weights, its size and scale read off the tensors."""
    state = read_tensor_state(path, UpscalerError)
    if "model.0.weight" in state:
        state = _from_old_layout(state)
    if "conv_first.weight" not in state or "body.0.rdb1.conv1.weight" not in state:
        raise UpscalerError(
            f"{path.name} is not an ESRGAN or Real-ESRGAN (RRDBNet) model; only those upscalers are supported"
        )
    in_channels = state["conv_first.weight"].shape[1]
    scales = {3: 4, 12: 2, 48: 1}
    if in_channels not in scales:
        raise UpscalerError(f"{path.name}: a first layer taking {in_channels} channels fits no ESRGAN scale")
    model = RRDBNet(
        scale=scales[in_channels],
        num_feat=state["conv_first.weight"].shape[0],
        num_block=len({key.split(".")[1] for key in state if key.startswith("body.")}),
        num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0],
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UpscalerError(f"{path.name} does not fit the RRDBNet architecture: {str(exc).splitlines()[0]}") from None
    return model.to(device=device, dtype=dtype).eval()


def upscale(model: RRDBNet, image: Image.Image, *, width: int, height: int) -> Image.Image:
    """The image through the model (its own scale), then resized to exactly width x height (Lanczos)."""
    parameter = next(model.parameters())
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        out = model(pixels).float().clamp(0, 1)
    result = Image.fromarray((out[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8))
    return result if result.size == (width, height) else result.resize((width, height), Image.Resampling.LANCZOS)


def write_tiny_esrgan(path: Path, *, scale: int = 4, layout: str = "basicsr", seed: int = 0) -> Path:
    """A random-weight RRDBNet (8 features, 1 block) as `.pth` (`layout` "basicsr" or "esrgan") or `.safetensors`."""
    from runtime.tiny.model import save_safetensors_atomically, write_file_atomically

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        return save_safetensors_atomically(state, path)
    if layout == "esrgan":
        back = {new: old for old, new in _OLD_LAYERS.items()}
        old_state: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.startswith("body."):
                _, block, rdb, conv, kind = key.split(".")
                old_state[f"model.1.sub.{block}.RDB{rdb[-1]}.conv{conv[-1]}.0.{kind}"] = value
            elif key.startswith("conv_body."):
                old_state[f"model.1.sub.1.{key.split('.')[1]}"] = value
            else:
                prefix = key.split(".")[0] + "."
                old_state[back[prefix] + key.removeprefix(prefix)] = value
        state = old_state
    else:
        state = {"params_ema": state}  # as Real-ESRGAN ships its files
    return write_file_atomically(path, lambda name: torch.save(state, name))
