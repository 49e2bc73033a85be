"""Drawing an X/Y/Z plot's grid (pure: PIL only), laid out like A1111's `draw_grid_annotations`.

One sub-grid per z value: the x labels above the columns, the y labels left of the rows, the
cells in between. Several z values sit side by side with their z label above each sub-grid
(A1111 joins its z grids in one row too). A cell without an image (failed or cancelled) is a
blank tile. Every tile has the size of the largest cell, so the grid's size follows the cells.
`grid_layout` says where each cell goes (tests check the pixels there are the cell's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
BLANK_TILE = (235, 235, 235)
Z_GAP_FACTOR = 0.1  # gap between z sub-grids, as a fraction of a tile's width


@dataclass(frozen=True)
class GridLayout:
    size: tuple[int, int]
    tile: tuple[int, int]
    font_size: int
    boxes: tuple[tuple[int, int], ...]  # the top-left corner of each cell, in cell order
    x_label_boxes: tuple[tuple[int, int, int, int], ...]  # per z sub-grid and column: (left, top, right, bottom)
    y_label_boxes: tuple[tuple[int, int, int, int], ...]  # per z sub-grid and row
    z_label_boxes: tuple[tuple[int, int, int, int], ...]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int) -> list[str]:
    """Words onto lines no wider than `width` (a word longer than that gets a line of its own)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def grid_layout(
    shape: tuple[int, int, int], tile: tuple[int, int], labels: tuple[Sequence[str], Sequence[str], Sequence[str]]
) -> GridLayout:
    """Where everything goes for `shape` (nx, ny, nz) tiles of `tile` size with the axes' labels."""
    nx, ny, nz = shape
    width, height = tile
    x_labels, y_labels, z_labels = labels
    font_size = max(12, (width + height) // 25)  # A1111's size, readable on tiny tiles
    font = _font(font_size)
    line = font_size + font_size // 2
    margin = font_size // 2
    has_x, has_y, has_z = any(x_labels), any(y_labels), any(z_labels) and nz > 1
    x_rows = max((len(_wrap(t, font, width - 2 * margin)) for t in x_labels), default=0) if has_x else 0
    pad_top = x_rows * line + 2 * margin if has_x else 0
    pad_left = int(max(font.getlength(t) for t in y_labels)) + 2 * margin if has_y else 0
    pad_left = min(pad_left, max(width * 3 // 4, 4 * font_size)) if has_y else 0  # long labels wrap
    z_top = line + 2 * margin if has_z else 0
    gap = int(width * Z_GAP_FACTOR) if nz > 1 else 0
    sub_w, sub_h = pad_left + nx * width, pad_top + ny * height
    boxes, x_boxes, y_boxes, z_boxes = [], [], [], []
    for zi in range(nz):
        left = zi * (sub_w + gap)
        z_boxes.append((left, 0, left + sub_w, z_top))
        for xi in range(nx):
            x0 = left + pad_left + xi * width
            x_boxes.append((x0, z_top, x0 + width, z_top + pad_top))
        for yi in range(ny):
            y0 = z_top + pad_top + yi * height
            y_boxes.append((left, y0, left + pad_left, y0 + height))
        for yi in range(ny):
            for xi in range(nx):
                boxes.append((left + pad_left + xi * width, z_top + pad_top + yi * height))
    size = (nz * sub_w + (nz - 1) * gap, z_top + sub_h)
    return GridLayout(size, tile, font_size, tuple(boxes), tuple(x_boxes), tuple(y_boxes), tuple(z_boxes))


def _draw_centered(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font, font_size: int) -> None:
    left, top, right, bottom = box
    margin = font_size // 2
    lines = _wrap(text, font, max(right - left - 2 * margin, 1))
    line = font_size + font_size // 2
    y = top + max((bottom - top - len(lines) * line) // 2, 0)
    for part in lines:
        x = left + max((right - left - font.getlength(part)) / 2, 0)
        draw.text((x, y), part, fill=TEXT, font=font)
        y += line


def draw_grid(
    images: Sequence[Image.Image | None],
    shape: tuple[int, int, int],
    labels: tuple[Sequence[str], Sequence[str], Sequence[str]],
) -> Image.Image:
    """The plot's grid: `images` in cell order (x fastest, then y, then z; None: a blank tile)."""
    nx, ny, nz = shape
    if len(images) != nx * ny * nz:
        raise ValueError(f"{len(images)} images for a {nx}×{ny}×{nz} plot")
    present = [image for image in images if image is not None]
    tile = (max((i.width for i in present), default=64), max((i.height for i in present), default=64))
    layout = grid_layout(shape, tile, labels)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = _font(layout.font_size)
    for image, (left, top) in zip(images, layout.boxes, strict=True):
        if image is None:
            draw.rectangle((left, top, left + tile[0] - 1, top + tile[1] - 1), fill=BLANK_TILE)
        else:
            grid.paste(image.convert("RGB"), (left, top))
    x_labels, y_labels, z_labels = labels
    for zi in range(nz):
        if any(x_labels):
            for xi, text in enumerate(x_labels):
                _draw_centered(draw, layout.x_label_boxes[zi * nx + xi], text, font, layout.font_size)
        if any(y_labels):
            for yi, text in enumerate(y_labels):
                _draw_centered(draw, layout.y_label_boxes[zi * ny + yi], text, font, layout.font_size)
        if nz > 1 and any(z_labels):
            _draw_centered(draw, layout.z_label_boxes[zi], z_labels[zi], font, layout.font_size)
    return grid
