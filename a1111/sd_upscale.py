"""A1111's "SD upscale" img2img script, pure: its arguments, its tile grid and how tiles are put back.

`script_name: "sd upscale"` with `script_args` in A1111 1.10's layout (`scripts/sd_upscale.py`):
`[info, overlap, upscaler_index, scale_factor]`, the first a placeholder for the UI's info text
(ignored), missing ones taking the UI's defaults (64, 0, 2). The init image is upscaled by
`scale_factor` with the upscaler at `upscaler_index` in `/sdapi/v1/upscalers`' list (0 "None", 1
"Lanczos", 2 "Nearest", then the member's model upscalers; as A1111, "None" leaves the image at its
size), cut into tiles of the request's width x height overlapping by `overlap` (`tile_grid`, A1111's
`images.split_grid`), each tile img2img'd, and the tiles blended back (`combine_tiles`,
`images.combine_grid`). Tile `k` of a run whose first seed is `seed` has A1111's seed
`tile_seed(seed, k, batch_size)`: tiles run `batch_size` at a time and each batch starts one seed on.

The upscaler index is resolved against the member's list at submit (`inference/services.py`),
which also counts the tiles (`tile_count`, for progress) and checks the output size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from a1111.fields import RequestValidationError, read_float, read_int

SCRIPT_TITLE = "SD upscale"
BUILTIN_UPSCALERS = ("None", "Lanczos", "Nearest")  # the head of /sdapi/v1/upscalers, in its order
DEFAULT_OVERLAP, DEFAULT_UPSCALER_INDEX, DEFAULT_SCALE_FACTOR = 64, 0, 2.0
MAX_OVERLAP = 256  # A1111's slider
MAX_SCALE_FACTOR = 4.0  # A1111's slider
ARG_COUNT = 4


@dataclass(frozen=True)
class SdUpscale:
    """A validated "SD upscale" run. `upscaler` (the name) and `tiles` are filled at submit."""

    overlap: int = DEFAULT_OVERLAP
    upscaler_index: int = DEFAULT_UPSCALER_INDEX
    scale_factor: float = DEFAULT_SCALE_FACTOR
    upscaler: str = ""
    tiles: int = 0  # tiles per upscaled image

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SdUpscale:
        names = cls.__dataclass_fields__.keys()
        return cls(**{key: value for key, value in data.items() if key in names})


def is_sd_upscale(script_name: Any) -> bool:
    """Whether a `script_name` names this script (case-insensitive, as A1111 matches titles)."""
    return isinstance(script_name, str) and script_name.strip().lower() == SCRIPT_TITLE.lower()


def parse_sd_upscale_args(script_args: Any, *, width: int, height: int) -> SdUpscale:
    """`script_args` as an `SdUpscale`; a 422 (`RequestValidationError`) naming `script_args[i]` when
    one does not fit. `width` x `height` is the tile size: the overlap must leave some of it."""
    if script_args is None:
        script_args = []
    if not isinstance(script_args, list):
        raise RequestValidationError("script_args", "must be a list: [info, overlap, upscaler_index, scale_factor]")
    if len(script_args) > ARG_COUNT:
        raise RequestValidationError(
            "script_args", f"SD upscale takes {ARG_COUNT} arguments [info, overlap, upscaler_index, scale_factor], got {len(script_args)}"
        )
    args = {f"script_args[{index}]": value for index, value in enumerate(script_args)}
    overlap = read_int(args, "script_args[1]", DEFAULT_OVERLAP, 0, MAX_OVERLAP)
    if overlap >= min(width, height):
        raise RequestValidationError(
            "script_args[1]", f"the tile overlap ({overlap}) must be smaller than the tile, width x height {width}x{height}"
        )
    upscaler_index = read_int(args, "script_args[2]", DEFAULT_UPSCALER_INDEX, 0, 10_000)
    scale_factor = read_float(args, "script_args[3]", DEFAULT_SCALE_FACTOR, 1.0, MAX_SCALE_FACTOR)
    return SdUpscale(overlap=overlap, upscaler_index=upscaler_index, scale_factor=scale_factor)


def upscaled_size(width: int, height: int, spec: SdUpscale) -> tuple[int, int]:
    """The size the init image is upscaled to: A1111's int(size x scale); "None" keeps it."""
    if spec.upscaler == "None":
        return width, height
    return int(width * spec.scale_factor), int(height * spec.scale_factor)


@dataclass(frozen=True)
class TileGrid:
    """Where each tile sits: `rows` of tile origins (x, y), each tile `tile_w` x `tile_h`."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    overlap: int
    rows: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def origins(self) -> list[tuple[int, int]]:
        """Every tile's origin, row by row (the order tiles are generated and seeded in)."""
        return [origin for row in self.rows for origin in row]


def _axis(length: int, tile: int, overlap: int) -> list[int]:
    count = max(1, math.ceil((length - overlap) / (tile - overlap)))
    step = (length - tile) / (count - 1) if count > 1 else 0
    starts = []
    for index in range(count):
        start = int(index * step)
        if start + tile >= length:
            start = length - tile  # the last tile ends at the edge (negative if the image is smaller)
        starts.append(start)
    return starts


def tile_grid(width: int, height: int, *, tile_w: int, tile_h: int, overlap: int) -> TileGrid:
    """A1111's `split_grid` layout of a `width` x `height` image (tiles evenly spread, edges flush)."""
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"the overlap must be in [0, {min(tile_w, tile_h)}), got {overlap}")
    xs, ys = _axis(width, tile_w, overlap), _axis(height, tile_h, overlap)
    return TileGrid(width, height, tile_w, tile_h, overlap, tuple(tuple((x, y) for x in xs) for y in ys))


def tile_count(width: int, height: int, *, tile_w: int, tile_h: int, overlap: int) -> int:
    return len(tile_grid(width, height, tile_w=tile_w, tile_h=tile_h, overlap=overlap).origins)


def split_tiles(image: Image.Image, grid: TileGrid) -> list[Image.Image]:
    """The tiles of `image`, in `grid.origins` order (black beyond the image where a tile is bigger)."""
    return [image.convert("RGB").crop((x, y, x + grid.tile_w, y + grid.tile_h)) for x, y in grid.origins]


def _ramp(overlap: int) -> np.ndarray:
    """A1111's blend weights of a tile's first `overlap` columns (or rows): 0, 1/overlap, …, as uint8 /255."""
    return np.floor(np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8).astype(np.float32) / 255


def _paste_blended(canvas: np.ndarray, piece: np.ndarray, start: int, overlap: int, axis: int) -> None:
    """Paste `piece` into `canvas` at `start` along `axis`: its first `overlap` lines blended over what
    is there with a rising ramp (unless it starts at the edge), the rest pasted over, clipped to the canvas."""
    lo, hi = max(start, 0), min(start + piece.shape[axis], canvas.shape[axis])
    if hi <= lo:
        return
    piece = np.take(piece, np.arange(lo - start, hi - start), axis=axis)
    region: list[slice] = [slice(None)] * canvas.ndim
    region[axis] = slice(lo, hi)
    if start <= 0 or overlap == 0:
        canvas[tuple(region)] = piece
        return
    weights = np.ones(hi - lo, dtype=np.float32)
    blended = min(overlap, hi - lo)
    weights[:blended] = _ramp(overlap)[:blended]
    shape = [1] * canvas.ndim
    shape[axis] = hi - lo
    weight = weights.reshape(shape)
    canvas[tuple(region)] = canvas[tuple(region)] * (1 - weight) + piece * weight


def combine_tiles(tiles: Sequence[Image.Image], grid: TileGrid) -> Image.Image:
    """The tiles (in `grid.origins` order) put back into one image, A1111's `combine_grid`: each row
    is assembled left to right, each tile's first `overlap` columns blended over its left neighbour;
    then the rows top to bottom, each row's first `overlap` lines blended over the row above."""
    if len(tiles) != len(grid.origins):
        raise ValueError(f"{len(tiles)} tiles for a grid of {len(grid.origins)}")
    pieces = iter(np.asarray(tile.convert("RGB"), dtype=np.float32) for tile in tiles)
    image = np.zeros((grid.height, grid.width, 3), dtype=np.float32)
    for row in grid.rows:
        y = row[0][1]
        strip = np.zeros((grid.tile_h, grid.width, 3), dtype=np.float32)
        for x, _ in row:
            _paste_blended(strip, next(pieces), x, grid.overlap, axis=1)
        if y < 0:  # a tile taller than the image: only its bottom part is the image
            strip, y = strip[-y:], 0
        _paste_blended(image, strip, y, grid.overlap, axis=0)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), mode="RGB")


def tile_seed(seed: int, index: int, batch_size: int, *, variation: bool) -> int:
    """A1111's seed of tile `index`: batch b of `batch_size` tiles starts at seed + b, and its tiles count
    on from there (all on the batch's seed with a variation strength, which varies the subseed)."""
    batch, position = divmod(index, max(batch_size, 1))
    return seed + batch + (0 if variation else position)


def tile_subseed(subseed: int, index: int, batch_size: int) -> int:
    """A1111's subseed of tile `index`: each batch counts from the request's subseed."""
    return subseed + index % max(batch_size, 1)
