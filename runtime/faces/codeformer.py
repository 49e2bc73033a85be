"""CodeFormer face restoration: the network, a loader for `models/Codeformer` files, a tiny test model.

A1111 restores faces with `codeformer-v0.1.0.pth` (sczhou/CodeFormer, `params_ema` inside). The
network is a VQGAN encoder, a transformer that predicts, for every cell of the 16x16 latent grid, which
of 1024 codebook entries belongs there, and a VQGAN generator that decodes those entries. The
fidelity weight `w` (A1111's "CodeFormer weight") blends encoder features back into the generator
through the `fuse_convs_dict` blocks: 0 trusts the codebook alone (best quality), 1 adds the full
encoder correction (closest to the input face). As A1111 does, the codebook features are first
given the input latent's per-channel mean and deviation (AdaIN).

The architecture is written here rather than taken from a package (those need torchvision, which
this project does not install); every parameter keeps the original name, so real files load with
strict=True. Generalised only where a smaller test model needs it:

- The encoder/generator have `len(ch_mult)` resolution levels, each with `res_blocks` residual
  blocks; self-attention sits at the lowest level (the latent grid), which is CodeFormer's
  `attn_resolutions=[16]` for a 512 face. The latent side is `face_size / 2**(levels-1)` (16 for the
  real model, 2 for the 64-px tiny one) and `position_emb` has one row per latent cell.
- `fuse_convs_dict` is keyed by the side of the feature map it fuses at, as in the real file
  ('32', '64', '128', '256' for a 512 face: the four levels between the full-size one and the latent
  grid). The tiny 64-px model fuses at the same four levels, so its keys are '4', '8', '16', '32'.
  The encoder features are taken after a level's last residual block, and fused after the
  generator's first residual block of the same level, as CodeFormer does.

The head count of the transformer is not recorded in a file; every released CodeFormer uses 8.
`load_codeformer` reads all other sizes off the tensors. `.pth` files are read with torch's
weights-only unpickler.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual name

from runtime.faces import FaceRestorerError
from runtime.weight_files import few, read_tensor_state

N_HEAD = 8  # attention heads of every released CodeFormer (not recoverable from the weights)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResBlock(nn.Module):
    """norm → swish → conv, twice, plus the input (through a 1x1 conv where the width changes)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.norm2 = _group_norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.conv_out = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (x if self.conv_out is None else self.conv_out(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map (1x1 conv projections)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))  # (n, hw, c)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(attended.transpose(1, 2).reshape(n, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # pad right and bottom only, as VQGAN does


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Blocks(nn.Module):
    """A `blocks` list run in order; holds the encoder's and the generator's weights."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class VectorQuantizer(nn.Module):
    """Only the codebook: at inference the transformer picks the entries, no nearest-neighbour search."""

    def __init__(self, codebook_size: int, emb_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, emb_dim)


class TransformerSALayer(nn.Module):
    """Pre-norm transformer encoder layer; the position embedding is added to queries and keys only."""

    def __init__(self, dim: int, n_head: int, dim_mlp: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, n_head, batch_first=True)
        self.linear1 = nn.Linear(dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(tokens)
        query = normed + position
        tokens = tokens + self.self_attn(query, query, normed, need_weights=False)[0]
        return tokens + self.linear2(F.gelu(self.linear1(self.norm2(tokens))))


class FuseSFTBlock(nn.Module):
    """Spatial feature transform: encoder and generator features → a scale and shift for the generator's."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encode_enc = ResBlock(2 * channels, channels)
        self.scale = self._two_convs(channels)
        self.shift = self._two_convs(channels)

    @staticmethod
    def _two_convs(channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, 1, 1)
        )

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, weight: float) -> torch.Tensor:
        joint = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + weight * (dec * self.scale(joint) + self.shift(joint))


def _adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`content` with `style`'s per-channel mean and standard deviation (unbiased, as CodeFormer)."""

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]

    content_mean, content_std = stats(content)
    style_mean, style_std = stats(style)
    return (content - content_mean) / content_std * style_std + style_mean


class CodeFormer(nn.Module):
    """CodeFormer with the defaults of `codeformer-v0.1.0.pth` (about 94 M parameters)."""

    def __init__(
        self,
        *,
        face_size: int = 512,
        nf: int = 64,
        ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8),
        res_blocks: int = 2,
        emb_dim: int = 256,
        codebook_size: int = 1024,
        dim_embd: int = 512,
        n_layers: int = 9,
        dim_mlp: int = 1024,
        n_head: int = N_HEAD,
        fuse_sizes: Sequence[int] = (32, 64, 128, 256),
    ) -> None:
        super().__init__()
        levels = len(ch_mult)
        sides = [face_size >> level for level in range(levels)]  # feature-map side at each level
        if face_size % (1 << (levels - 1)) or sides[-1] < 1:
            raise ValueError(f"face_size {face_size} does not halve evenly through {levels} levels")
        bad_sizes = sorted(set(fuse_sizes) - set(sides[:-1]))
        if bad_sizes:
            raise ValueError(f"fuse sizes {bad_sizes} are not feature-map sides above the latent grid {sides[:-1]}")
        self.face_size = face_size
        self.latent_side = sides[-1]
        widths = [nf * mult for mult in ch_mult]

        # Encoder; `_taps` maps a block index to the side of the map it hands to a fuse block.
        taps = set(fuse_sizes)
        enc: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1)]
        self._taps: dict[int, int] = {}
        width = nf
        for level, out_width in enumerate(widths):
            for _ in range(res_blocks):
                enc.append(ResBlock(width, out_width))
                width = out_width
                if level == levels - 1:
                    enc.append(AttnBlock(width))
            if sides[level] in taps:
                self._taps[len(enc) - 1] = sides[level]
            if level != levels - 1:
                enc.append(Downsample(width))
        enc += [ResBlock(width, width), AttnBlock(width), ResBlock(width, width), _group_norm(width)]
        enc.append(nn.Conv2d(width, emb_dim, 3, 1, 1))
        self.encoder = _Blocks(enc)

        self.quantize = VectorQuantizer(codebook_size, emb_dim)

        # Generator; `_fuses` maps a block index to the side of the map fused after it.
        gen: list[nn.Module] = [nn.Conv2d(emb_dim, width, 3, 1, 1)]
        gen += [ResBlock(width, width), AttnBlock(width), ResBlock(width, width)]
        self._fuses: dict[int, int] = {}
        for level in reversed(range(levels)):
            for block in range(res_blocks):
                gen.append(ResBlock(width, widths[level]))
                width = widths[level]
                if block == 0 and sides[level] in taps:
                    self._fuses[len(gen) - 1] = sides[level]
                if level == levels - 1:
                    gen.append(AttnBlock(width))
            if level != 0:
                gen.append(Upsample(width))
        gen += [_group_norm(width), nn.Conv2d(width, 3, 3, 1, 1)]
        self.generator = _Blocks(gen)

        self.position_emb = nn.Parameter(torch.zeros(self.latent_side**2, dim_embd))
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.Sequential(*[TransformerSALayer(dim_embd, n_head, dim_mlp) for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))
        self.fuse_convs_dict = nn.ModuleDict(
            {str(side): FuseSFTBlock(widths[sides.index(side)]) for side in sorted(taps, reverse=True)}
        )

    def forward(self, faces: torch.Tensor, *, fidelity: float = 0.5) -> torch.Tensor:
        """Restore aligned faces: (N, 3, S, S) RGB in [-1, 1] → the same, S = `face_size`.

        `fidelity` is A1111's CodeFormer weight `w`: 0 decodes the predicted codes alone, 1 adds the
        full correction from the input's own features. The output is clamped to [-1, 1].
        """
        if faces.ndim != 4 or faces.shape[1:] != (3, self.face_size, self.face_size):
            side = self.face_size
            raise ValueError(f"expected faces of shape (N, 3, {side}, {side}), got {tuple(faces.shape)}")
        if not 0.0 <= fidelity <= 1.0:
            raise ValueError(f"fidelity must lie in [0, 1], got {fidelity}")
        encoded: dict[int, torch.Tensor] = {}
        x = faces
        for index, block in enumerate(self.encoder.blocks):
            x = block(x)
            if index in self._taps:
                encoded[self._taps[index]] = x
        latent = x  # (N, emb_dim, side, side)

        tokens = self.feat_emb(latent.flatten(2).transpose(1, 2))  # (N, side², dim_embd)
        for layer in self.ft_layers:
            tokens = layer(tokens, self.position_emb)
        codes = self.idx_pred_layer(tokens).argmax(dim=-1)  # top-1 entry per cell (softmax would not change it)
        quantized = self.quantize.embedding(codes).transpose(1, 2).reshape(latent.shape)
        x = _adain(quantized, latent)

        for index, block in enumerate(self.generator.blocks):
            x = block(x)
            if fidelity > 0 and index in self._fuses:
                side = self._fuses[index]
                x = self.fuse_convs_dict[str(side)](encoded[side], x, fidelity)
        return x.clamp(-1.0, 1.0)


_FOREIGN_MARKERS = {  # a key that identifies another kind of model → what to call it
    "stylegan_decoder.style_mlp.1.weight": "a GFPGAN face restorer",
    "conv_body_first.weight": "a GFPGAN face restorer",
    "conv_first.weight": "an ESRGAN-family upscaler",
    "model.0.weight": "an ESRGAN-family upscaler",
}
_REQUIRED = ("encoder.blocks.0.weight", "quantize.embedding.weight", "generator.blocks.0.weight", "position_emb",
             "feat_emb.weight", "ft_layers.0.linear1.weight", "idx_pred_layer.1.weight")


def _indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in state if (m := pattern.match(key))})


def _encoder_shape(state: Mapping[str, torch.Tensor], nf: int, name: str) -> tuple[tuple[int, ...], int]:
    """`ch_mult` and residual blocks per level, read off the encoder's blocks (split at the Downsamples)."""
    levels: list[list[int]] = [[]]  # output widths of each level's residual blocks
    for index in _indices(state, "encoder.blocks."):
        prefix = f"encoder.blocks.{index}."
        if prefix + "conv2.weight" in state:
            levels[-1].append(state[prefix + "conv2.weight"].shape[0])
        elif prefix + "conv.weight" in state:
            levels.append([])
    res_blocks = len(levels[0])
    last = levels[-1]
    if res_blocks == 0 or len(last) != res_blocks + 2 or any(len(level) != res_blocks for level in levels[:-1]):
        raise FaceRestorerError(f"{name}: the encoder's blocks do not form CodeFormer's VQGAN levels")
    widths = [level[-1] for level in levels[:-1]] + [last[res_blocks - 1]]
    if any(width % nf for width in widths):
        raise FaceRestorerError(f"{name}: encoder widths {widths} are not multiples of the first width {nf}")
    return tuple(width // nf for width in widths), res_blocks


def load_codeformer(
    path: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> CodeFormer:
    """A CodeFormer with the file's weights, every size read off the tensors; FaceRestorerError if it is not one."""
    path = Path(path)
    state = read_tensor_state(path, FaceRestorerError)
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        kind = next((what for key, what in _FOREIGN_MARKERS.items() if key in state), None)
        if kind is None and "quantize.embedding.weight" in state:
            kind = "a VQGAN without CodeFormer's transformer"
        raise FaceRestorerError(
            f"{path.name} is not a CodeFormer model"
            + (f" (it looks like {kind})" if kind else f" (it lacks {few(missing)})")
        )
    nf = state["encoder.blocks.0.weight"].shape[0]
    ch_mult, res_blocks = _encoder_shape(state, nf, path.name)
    tokens, dim_embd = state["position_emb"].shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise FaceRestorerError(f"{path.name}: position_emb has {tokens} rows, not a square latent grid")
    codebook_size, emb_dim = state["quantize.embedding.weight"].shape
    fuse_keys = {key.split(".")[1] for key in state if key.startswith("fuse_convs_dict.")}
    if not all(key.isdigit() for key in fuse_keys):
        raise FaceRestorerError(f"{path.name}: fuse_convs_dict keys {sorted(fuse_keys)} are not feature-map sizes")
    if dim_embd % N_HEAD:
        raise FaceRestorerError(f"{path.name}: transformer width {dim_embd} does not split into {N_HEAD} heads")
    try:
        model = CodeFormer(
            face_size=side << (len(ch_mult) - 1),
            nf=nf,
            ch_mult=ch_mult,
            res_blocks=res_blocks,
            emb_dim=emb_dim,
            codebook_size=codebook_size,
            dim_embd=dim_embd,
            n_layers=len(_indices(state, "ft_layers.")),
            dim_mlp=state["ft_layers.0.linear1.weight"].shape[0],
            fuse_sizes=sorted(int(key) for key in fuse_keys),
        )
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as exc:
        raise FaceRestorerError(
            f"{path.name} does not fit the CodeFormer architecture: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(device=device, dtype=dtype).eval()


def write_tiny_codeformer(path: Path, *, face_size: int = 64, seed: int = 0) -> Path:
    """A random-weight CodeFormer with the real one's levels and block indices but narrow widths.

    32-wide levels (GroupNorm needs multiples of 32) doubling to 64, a 32-wide latent, a 64-entry
    codebook, 2 transformer layers of width 32 and fuse blocks at the same four levels as the real
    model. `.safetensors` by suffix, else a `.pth` with the weights under `params_ema`, as
    `codeformer-v0.1.0.pth` ships. `face_size` must be a multiple of 32.
    """
    from runtime.tiny.model import save_safetensors_atomically, write_file_atomically

    if face_size % 32 or face_size < 32:
        raise ValueError(f"face_size must be a positive multiple of 32, got {face_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CodeFormer(
            face_size=face_size, nf=32, ch_mult=(1, 1, 2, 2, 2, 2), emb_dim=32, codebook_size=64, dim_embd=32,
            n_layers=2, dim_mlp=64, fuse_sizes=tuple(face_size >> level for level in (4, 3, 2, 1)),
        )
        with torch.no_grad():  # torch starts norms at 1/0 and position_emb at 0: make those random too
            for parameter in model.parameters():
                if parameter.ndim == 1 or parameter is model.position_emb:
                    parameter.add_(torch.randn_like(parameter), alpha=0.1)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        return save_safetensors_atomically(state, path)
    return write_file_atomically(path, lambda name: torch.save({"params_ema": state}, name))
