"""Pixel-space preparation and finishing for img2img and inpainting, as AUTOMATIC1111 WebUI 1.10 does it.

The worker calls `prepare()` before running a diffusers img2img/inpaint pipeline and `finish()` on
every image the pipeline returns. Between them they reproduce what A1111 does around the sampler
(`StableDiffusionProcessingImg2Img.init` and `apply_overlay` in modules/processing.py,
`resize_image` in modules/images.py, `get_crop_region`/`expand_crop_region`/`fill` in
modules/masking.py):

* the init image is flattened onto white and resized with one of A1111's four resize modes;
* the mask is binarised, optionally inverted and Gaussian-blurred (separately in x and y);
* "Only masked" (``inpaint_full_res``) crops the region around the mask, expanded to the output
  aspect ratio, and `finish()` pastes the generated crop back into the full-size original;
* "Masked content" (``inpainting_fill``) pre-fills the masked area of the init image (the latent
  fills' noise or zeros are put into the init latents by `runtime/init_latents.py`);
* `finish()` composites the original pixels back over everything outside the (blurred) mask, so
  unmasked pixels come back exactly as they were sent.

Only PIL and numpy: no torch, diffusers or Django here, so all of it is testable on a CPU in
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# A1111's resize modes (the `resize_mode` field of /sdapi/v1/img2img).
RESIZE_JUST_RESIZE, RESIZE_CROP_AND_RESIZE, RESIZE_AND_FILL, RESIZE_LATENT_UPSCALE = 0, 1, 2, 3
RESIZE_MODES = (RESIZE_JUST_RESIZE, RESIZE_CROP_AND_RESIZE, RESIZE_AND_FILL, RESIZE_LATENT_UPSCALE)

# A1111's "Masked content" choices (the `inpainting_fill` field).
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3
INPAINTING_FILLS = (FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING)

# A1111's default "img2img background color": transparent init images are flattened onto it.
BACKGROUND_COLOR = (255, 255, 255)

# masking.fill: (blur radius, how many times the blurred layer is composited), widest first.
_FILL_BLUR_PASSES: tuple[tuple[int, int], ...] = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2/y2 exclusive, as PIL uses


# --------------------------------------------------------------------------------------------
# Resizing (modules/images.py resize_image)
# --------------------------------------------------------------------------------------------


def resize_image(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """Resize `image` to exactly `width` x `height` the way A1111's `images.resize_image` does.

    0 just resize: stretch to the new size.
    1 crop and resize: scale to cover the new size keeping the aspect ratio, then crop the centre.
    2 resize and fill: scale to fit inside the new size keeping the aspect ratio, centre it, and
      fill the bars by stretching the image's outermost row/column across them.
    3 latent upscale: A1111 resizes the VAE latent bilinearly; a pixel-space pipeline cannot, so
      this is approximated by a Lanczos "just resize".

    Resampling is Lanczos (A1111 with no img2img upscaler set). The image mode is kept.
    """
    _check_size(width, height)
    if mode in (RESIZE_JUST_RESIZE, RESIZE_LATENT_UPSCALE):
        return image.resize((width, height), resample=Image.Resampling.LANCZOS)
    if mode == RESIZE_CROP_AND_RESIZE:
        return _crop_and_resize(image, width, height)
    if mode == RESIZE_AND_FILL:
        return _resize_and_fill(image, width, height)
    raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, not {mode!r}")


def _crop_and_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    target_ratio, source_ratio = width / height, image.width / image.height
    if target_ratio > source_ratio:  # source is taller: match widths, crop top and bottom
        scaled_w, scaled_h = width, image.height * width // image.width
    else:  # source is wider (or the same shape): match heights, crop left and right
        scaled_w, scaled_h = image.width * height // image.height, height
    scaled = image.resize((scaled_w, scaled_h), resample=Image.Resampling.LANCZOS)
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(scaled, (width // 2 - scaled_w // 2, height // 2 - scaled_h // 2))
    return canvas


def _resize_and_fill(image: Image.Image, width: int, height: int) -> Image.Image:
    target_ratio, source_ratio = width / height, image.width / image.height
    if target_ratio < source_ratio:  # source is wider: match widths, bars above and below
        scaled_w, scaled_h = width, image.height * width // image.width
    else:  # source is taller (or the same shape): match heights, bars left and right
        scaled_w, scaled_h = image.width * height // image.height, height
    scaled = image.resize((scaled_w, scaled_h), resample=Image.Resampling.LANCZOS)
    left, top = width // 2 - scaled_w // 2, height // 2 - scaled_h // 2
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(scaled, (left, top))

    if target_ratio < source_ratio:
        _stretch_edge(canvas, scaled.crop((0, 0, scaled_w, 1)), (0, 0, width, top))
        _stretch_edge(canvas, scaled.crop((0, scaled_h - 1, scaled_w, scaled_h)), (0, top + scaled_h, width, height))
    elif target_ratio > source_ratio:
        _stretch_edge(canvas, scaled.crop((0, 0, 1, scaled_h)), (0, 0, left, height))
        _stretch_edge(canvas, scaled.crop((scaled_w - 1, 0, scaled_w, scaled_h)), (left + scaled_w, 0, width, height))
    return canvas


def _stretch_edge(canvas: Image.Image, edge: Image.Image, box: Box) -> None:
    """Paste the one-pixel `edge` strip stretched over `box` of `canvas` (nothing if the box is empty)."""
    x1, y1, x2, y2 = box
    if x2 > x1 and y2 > y1:
        canvas.paste(edge.resize((x2 - x1, y2 - y1), resample=Image.Resampling.NEAREST), (x1, y1))


# --------------------------------------------------------------------------------------------
# Image and mask normalisation
# --------------------------------------------------------------------------------------------


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def flatten(image: Image.Image, background: tuple[int, int, int] = BACKGROUND_COLOR) -> Image.Image:
    """An RGB copy of `image`, with any transparency composited onto `background` (images.flatten)."""
    if not _has_alpha(image):
        return image.convert("RGB")
    canvas = Image.new("RGBA", image.size, (*background, 255))
    canvas.alpha_composite(image.convert("RGBA"))
    return canvas.convert("RGB")


def binary_mask(mask: Image.Image, *, round_mask: bool = True) -> Image.Image:
    """The "L" mask A1111 works with: white = inpaint, black = keep.

    A mask with a non-opaque alpha channel (what a browser sketch layer sends) is the alpha channel;
    any other mask is its luminance. With `round_mask`, values above 127 become 255, the rest 0.
    """
    if _has_alpha(mask):
        alpha = mask.convert("RGBA").getchannel("A")
        gray = alpha if alpha.getextrema() != (255, 255) else mask.convert("L")
    else:
        gray = mask.convert("L")
    if round_mask:
        gray = gray.point(lambda value: 255 if value > 127 else 0)
    return gray


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-D kernel A1111 blurs the mask with: cv2's Gaussian, size 2 * int(2.5 * sigma + 0.5) + 1."""
    radius = int(2.5 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets**2) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def _reflect_101(indices: np.ndarray, length: int) -> np.ndarray:
    """Map indices outside [0, length) back inside by mirroring without repeating the edge (cv2's default border)."""
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * length - 2
    folded = np.mod(indices, period)
    return np.where(folded < length, folded, period - folded)


def _convolution_matrix(length: int, kernel: np.ndarray) -> np.ndarray:
    """The `length` x `length` matrix that convolves a vector with `kernel` (mirrored borders).

    One matrix product per axis is fast whatever the blur radius, unlike a loop over the taps.
    """
    radius = len(kernel) // 2
    rows = np.repeat(np.arange(length), len(kernel))
    sources = _reflect_101(rows + np.tile(np.arange(-radius, radius + 1), length), length)
    matrix = np.zeros((length, length), dtype=np.float32)
    np.add.at(matrix, (rows, sources), np.tile(kernel, length).astype(np.float32))
    return matrix


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """Gaussian-blur an "L" mask with sigma `blur_x` horizontally and `blur_y` vertically (0 = no blur)."""
    if blur_x <= 0 and blur_y <= 0:
        return mask
    values = np.asarray(mask, dtype=np.float32)
    if blur_x > 0:
        values = np.rint(values @ _convolution_matrix(mask.width, gaussian_kernel(blur_x)).T)
    if blur_y > 0:
        values = np.rint(_convolution_matrix(mask.height, gaussian_kernel(blur_y)) @ values)
    values = np.clip(values, 0, 255)
    return Image.fromarray(values.astype(np.uint8), mode="L")


# --------------------------------------------------------------------------------------------
# "Only masked" crop region (modules/masking.py)
# --------------------------------------------------------------------------------------------


def get_crop_region(mask: Image.Image, padding: int = 0) -> Box | None:
    """The box around the mask's non-zero pixels grown by `padding` (clipped to the mask); None if all black."""
    bbox = mask.convert("L").getbbox()
    if bbox is None:
        return None
    x1, y1, x2, y2 = bbox
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def _grow_span(start: int, end: int, extra: int, limit: int) -> tuple[int, int]:
    """Grow [start, end) by `extra` pixels, split evenly, sliding it back inside [0, limit) when it pokes out."""
    start -= extra // 2
    end += extra - extra // 2
    if end > limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, end - start
    return start, min(end, limit)


def expand_crop_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """Grow `box` to the `width` : `height` aspect ratio, keeping it centred and inside the image.

    Only the short side grows. If the image is too small for that, the box stops at the image edge
    (its ratio is then off, and resize mode 2 pads the difference).
    """
    x1, y1, x2, y2 = box
    box_ratio, target_ratio = (x2 - x1) / (y2 - y1), width / height
    if box_ratio > target_ratio:
        extra = int((x2 - x1) / target_ratio - (y2 - y1))
        y1, y2 = _grow_span(y1, y2, extra, image_height)
    else:
        extra = int((y2 - y1) * target_ratio - (x2 - x1))
        x1, x2 = _grow_span(x1, x2, extra, image_width)
    return x1, y1, x2, y2


# --------------------------------------------------------------------------------------------
# "Masked content" (inpainting_fill)
# --------------------------------------------------------------------------------------------


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Paint the masked area with colours bled in from around it (A1111's masking.fill).

    The unmasked pixels (alpha = 255 - mask, premultiplied) are blurred at decreasing radii and each
    blur is composited over the previous ones, so far-away colour fills the middle of the hole and
    nearer colour its rim; the last, unblurred pass puts the unmasked pixels back exactly.
    """
    layer = image.convert("RGBA")
    layer.putalpha(ImageOps.invert(mask.convert("L")))
    premultiplied = layer.convert("RGBa")
    result = Image.new("RGBA", image.size)
    for radius, repeats in _FILL_BLUR_PASSES:
        blurred = premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def apply_inpainting_fill(image: Image.Image, mask: Image.Image, fill: int) -> Image.Image:
    """Pre-fill the masked area of the init image according to A1111's "Masked content".

    FILL: colours from the surroundings (`fill_masked`). ORIGINAL: unchanged.
    LATENT_NOISE / LATENT_NOTHING: A1111 applies FILL here too, then replaces the masked part of
    the encoded init *latent* with the seed's noise or zeros; that second half happens in latent
    space, in the pipeline call (`runtime/init_latents.py`).
    """
    if fill not in INPAINTING_FILLS:
        raise ValueError(f"inpainting_fill must be one of {INPAINTING_FILLS}, not {fill!r}")
    if fill == ORIGINAL:
        return image
    return fill_masked(image, mask)


# --------------------------------------------------------------------------------------------
# prepare() and finish()
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InpaintSettings:
    """A1111's inpainting options (same names as the /sdapi/v1/img2img fields)."""

    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_round: bool = True
    inpainting_fill: int = ORIGINAL
    inpaint_full_res: bool = True  # "Inpaint area: Only masked"
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: bool = False  # "Mask mode: Inpaint not masked"

    def __post_init__(self) -> None:
        if self.mask_blur_x < 0 or self.mask_blur_y < 0:
            raise ValueError("mask_blur must not be negative")
        if self.inpaint_full_res_padding < 0:
            raise ValueError("inpaint_full_res_padding must not be negative")
        if self.inpainting_fill not in INPAINTING_FILLS:
            raise ValueError(f"inpainting_fill must be one of {INPAINTING_FILLS}, not {self.inpainting_fill!r}")


@dataclass(frozen=True)
class PreparedImage:
    """What the pipeline gets (`image`, `mask`) and what `finish()` needs to put its output back.

    `image` is RGB and `mask` (white = repaint) is "L", both exactly the requested width x height;
    `mask` is None for plain img2img. The private fields belong to `finish()`.
    """

    image: Image.Image
    mask: Image.Image | None
    # The original at its output size, alpha = 255 - overlay mask: composited over the result.
    _overlay: Image.Image | None = field(default=None, repr=False)
    # "Only masked": where in the original the generated image goes back (x1, y1, x2, y2).
    _crop_box: Box | None = field(default=None, repr=False)

    @property
    def crop_box(self) -> Box | None:
        """The "Only masked" region of the original (x1, y1, x2, y2), or None when the whole image is used."""
        return self._crop_box

    @property
    def output_size(self) -> tuple[int, int]:
        """The size `finish()` returns: the init image's for "Only masked", width x height otherwise."""
        return self._overlay.size if self._overlay is not None else self.image.size


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, not {width}x{height}")


def _overlay(image: Image.Image, overlay_mask: Image.Image) -> Image.Image:
    """`image` with alpha = inverted mask: opaque where nothing is repainted."""
    overlay = image.convert("RGBA")
    overlay.putalpha(ImageOps.invert(overlay_mask))
    return overlay


def _process_mask(mask: Image.Image, settings: InpaintSettings) -> Image.Image:
    processed = binary_mask(mask, round_mask=settings.mask_round)
    if settings.inpainting_mask_invert:
        processed = ImageOps.invert(processed)
    return blur_mask(processed, settings.mask_blur_x, settings.mask_blur_y)


def prepare(
    init: Image.Image,
    mask: Image.Image | None,
    *,
    width: int,
    height: int,
    resize_mode: int,
    settings: InpaintSettings = InpaintSettings(),
) -> PreparedImage:
    """Turn an img2img request's init image (and inpainting mask) into the pipeline's inputs.

    `init` may be any mode; transparency is flattened onto white. `mask` must be the size of
    `init` (ValueError otherwise). Without a mask this is A1111's plain img2img: the init image
    resized with `resize_mode`. With one:

    * "Only masked" (`settings.inpaint_full_res`): the crop region is the blurred mask's bounding
      box plus padding, grown to the width : height ratio; image and mask are cropped to it and
      resized with "resize and fill". `finish()` then returns an image the size of `init`.
      A mask with nothing to inpaint falls back to plain img2img (mask None), as A1111 does.
    * "Whole picture": image and mask are resized with `resize_mode`. The overlay uses the mask
      doubled (as A1111): the original where the mask is 0, blended in up to half, none above.
    """
    _check_size(width, height)
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, not {resize_mode!r}")
    image = flatten(init)
    if mask is None:
        return PreparedImage(image=resize_image(image, width, height, resize_mode), mask=None)
    if mask.size != init.size:
        raise ValueError(
            f"mask is {mask.width}x{mask.height} but the image is {init.width}x{init.height}: send a mask of the same size"
        )

    processed = _process_mask(mask, settings)
    if settings.inpaint_full_res:
        return _prepare_only_masked(image, processed, width, height, resize_mode, settings)
    return _prepare_whole_picture(image, processed, width, height, resize_mode, settings)


def _prepare_only_masked(
    image: Image.Image, mask: Image.Image, width: int, height: int, resize_mode: int, settings: InpaintSettings
) -> PreparedImage:
    region = get_crop_region(mask, settings.inpaint_full_res_padding)
    if region is None:  # nothing to inpaint: A1111 switches to plain img2img ("Unable to perform Only masked")
        return PreparedImage(image=resize_image(image, width, height, resize_mode), mask=None)
    region = expand_crop_region(region, width, height, image.width, image.height)
    pipeline_mask = resize_image(mask.crop(region), width, height, RESIZE_AND_FILL)
    pipeline_image = resize_image(image.crop(region), width, height, RESIZE_AND_FILL)
    pipeline_image = apply_inpainting_fill(pipeline_image, pipeline_mask, settings.inpainting_fill)
    return PreparedImage(image=pipeline_image, mask=pipeline_mask, _overlay=_overlay(image, mask), _crop_box=region)


def _prepare_whole_picture(
    image: Image.Image, mask: Image.Image, width: int, height: int, resize_mode: int, settings: InpaintSettings
) -> PreparedImage:
    resized_image = resize_image(image, width, height, resize_mode)
    pipeline_mask = resize_image(mask, width, height, resize_mode)
    doubled = np.clip(np.asarray(pipeline_mask, dtype=np.uint16) * 2, 0, 255).astype(np.uint8)
    overlay = _overlay(resized_image, Image.fromarray(doubled, mode="L"))
    pipeline_image = apply_inpainting_fill(resized_image, pipeline_mask, settings.inpainting_fill)
    return PreparedImage(image=pipeline_image, mask=pipeline_mask, _overlay=overlay)


def finish(generated: Image.Image, prepared: PreparedImage) -> Image.Image:
    """Put a generated image back together with the original (A1111's apply_overlay).

    Plain img2img: `generated` as RGB. Inpainting: for "Only masked", `generated` is scaled to the
    crop box ("crop and resize", the inverse of the "resize and fill" `prepare()` used) and pasted
    into the original at it; then the original is composited over it with alpha = inverted
    (blurred) mask, so pixels the mask does not touch are exactly the original's.
    """
    overlay = prepared._overlay
    if overlay is None:
        return generated.convert("RGB")

    box = prepared._crop_box
    if box is not None:
        x1, y1, x2, y2 = box
        base = overlay.convert("RGB")
        base.paste(resize_image(generated.convert("RGB"), x2 - x1, y2 - y1, RESIZE_CROP_AND_RESIZE), (x1, y1))
    else:
        base = generated.convert("RGB")
        if base.size != overlay.size:  # the pipeline should return width x height; stretch if it did not
            base = base.resize(overlay.size, resample=Image.Resampling.LANCZOS)

    composed = base.convert("RGBA")
    composed.alpha_composite(overlay)
    return composed.convert("RGB")
