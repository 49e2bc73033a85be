"""Tests for the img2img/inpainting pre- and post-processing (A1111 1.10 behaviour), PIL and numpy only.

No database and no model: ``.venv/bin/python -m pytest tests/worker/test_img2img_ops.py -q``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from runtime.img2img import (
    FILL,
    LATENT_NOISE,
    LATENT_NOTHING,
    ORIGINAL,
    RESIZE_AND_FILL,
    RESIZE_CROP_AND_RESIZE,
    RESIZE_JUST_RESIZE,
    RESIZE_LATENT_UPSCALE,
    InpaintSettings,
    PreparedImage,
    binary_mask,
    blur_mask,
    expand_crop_region,
    finish,
    get_crop_region,
    prepare,
    resize_image,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
BLUR = 4
BLUR_REACH = int(2.5 * BLUR + 0.5)  # the Gaussian kernel's radius: the blur changes nothing farther away


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def noise_image(width: int, height: int, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


def rect_mask(size: tuple[int, int], box: tuple[int, int, int, int], mode: str = "L") -> Image.Image:
    """A black mask with the white rectangle `box` (x1, y1, x2, y2; x2/y2 exclusive)."""
    mask = Image.new(mode, size, 0)
    x1, y1, x2, y2 = box
    ImageDraw.Draw(mask).rectangle((x1, y1, x2 - 1, y2 - 1), fill="white")
    return mask


def near(box: tuple[int, int, int, int], size: tuple[int, int], margin: int) -> np.ndarray:
    """HxW booleans: True within `margin` pixels of `box`."""
    x1, y1, x2, y2 = box
    out = np.zeros((size[1], size[0]), dtype=bool)
    out[max(y1 - margin, 0) : y2 + margin, max(x1 - margin, 0) : x2 + margin] = True
    return out


def solid(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


def inpaint(
    init: Image.Image,
    mask: Image.Image | None,
    width: int,
    height: int,
    mode: int = RESIZE_JUST_RESIZE,
    **settings,
) -> PreparedImage:
    """`prepare()` with the InpaintSettings given as keywords."""
    return prepare(init, mask, width=width, height=height, resize_mode=mode, settings=InpaintSettings(**settings))


# ----------------------------------------------------------------------------------------------
# resize_image
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [RESIZE_JUST_RESIZE, RESIZE_CROP_AND_RESIZE, RESIZE_AND_FILL, RESIZE_LATENT_UPSCALE])
@pytest.mark.parametrize(("source", "target"), [((200, 100), (64, 64)), ((100, 200), (96, 48)), ((64, 64), (40, 72))])
def test_every_resize_mode_gives_exactly_the_requested_size(mode, source, target):
    out = resize_image(noise_image(*source), *target, mode)
    assert out.size == target
    assert out.mode == "RGB"


def test_resize_keeps_the_image_mode():
    assert resize_image(Image.new("L", (50, 20)), 32, 32, RESIZE_AND_FILL).mode == "L"


def test_just_resize_stretches_the_whole_image():
    image = solid((200, 100), RED)
    image.paste(solid((100, 100), BLUE), (100, 0))
    out = pixels(resize_image(image, 64, 64, RESIZE_JUST_RESIZE))
    assert (np.abs(out[:, :28] - RED) <= 2).all()  # the left half is now 32 columns wide, the full height
    assert (np.abs(out[:, 36:] - BLUE) <= 2).all()


def test_latent_upscale_is_approximated_by_just_resize():
    image = noise_image(90, 60)
    latent = resize_image(image, 64, 48, RESIZE_LATENT_UPSCALE)
    assert np.array_equal(pixels(latent), pixels(resize_image(image, 64, 48, RESIZE_JUST_RESIZE)))


def test_crop_and_resize_of_a_wide_image_to_a_square_keeps_the_centre():
    image = solid((256, 128), RED)  # red | green | blue: the green middle is the central square
    image.paste(solid((128, 128), GREEN), (64, 0))
    image.paste(solid((64, 128), BLUE), (192, 0))
    out = pixels(resize_image(image, 64, 64, RESIZE_CROP_AND_RESIZE))
    assert (np.abs(out[:, 2:-2] - GREEN) <= 2).all()
    assert out[..., 0].max() < 30 and out[..., 2].max() < 30  # nothing of the red or blue sides


def test_crop_and_resize_of_a_tall_image_crops_top_and_bottom():
    image = solid((64, 192), RED)
    image.paste(solid((64, 64), GREEN), (0, 64))
    out = pixels(resize_image(image, 32, 32, RESIZE_CROP_AND_RESIZE))
    assert (np.abs(out[2:-2] - GREEN) <= 2).all()


def test_resize_and_fill_keeps_the_whole_image_and_fills_the_bars_with_edge_colours():
    image = solid((128, 64), RED)  # top half red, bottom half blue, a green left column
    image.paste(solid((128, 32), BLUE), (0, 32))
    image.paste(solid((4, 64), GREEN), (0, 0))
    out = pixels(resize_image(image, 64, 64, RESIZE_AND_FILL))
    # The image is scaled to 64x32 and centred: rows 16..47. Its left edge is still there.
    assert out[24, 0, 1] > 200 and out[40, 0, 1] > 200
    assert (np.abs(out[18:30, 4:] - RED) <= 2).all()
    assert (np.abs(out[34:46, 4:] - BLUE) <= 2).all()
    # The bars repeat the image's outermost rows.
    assert np.array_equal(out[:16], np.repeat(out[16:17], 16, axis=0))
    assert np.array_equal(out[48:], np.repeat(out[47:48], 16, axis=0))
    assert (np.abs(out[:16, 4:] - RED) <= 2).all()
    assert (np.abs(out[48:, 4:] - BLUE) <= 2).all()


def test_resize_and_fill_of_a_tall_image_fills_left_and_right_bars():
    image = solid((32, 64), GREEN)
    out = pixels(resize_image(image, 64, 32, RESIZE_AND_FILL))
    assert np.array_equal(out[:, :24], np.repeat(out[:, 24:25], 24, axis=1))
    assert np.array_equal(out[:, 40:], np.repeat(out[:, 39:40], 24, axis=1))
    assert (out == GREEN).all()


def test_resize_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="resize_mode"):
        resize_image(noise_image(8, 8), 8, 8, 4)


# ----------------------------------------------------------------------------------------------
# Mask: binarise, invert, blur
# ----------------------------------------------------------------------------------------------


def gradient_mask(width: int = 256, height: int = 4) -> Image.Image:
    row = np.arange(width, dtype=np.uint8)
    return Image.fromarray(np.tile(row, (height, 1)), mode="L")


def test_mask_round_binarises_at_mid_grey():
    values = pixels(binary_mask(gradient_mask()))[0]
    assert set(np.unique(values)) == {0, 255}
    assert (values[:128] == 0).all() and (values[128:] == 255).all()


def test_without_mask_round_the_grey_levels_stay():
    assert np.array_equal(pixels(binary_mask(gradient_mask(), round_mask=False)), pixels(gradient_mask()))


def test_an_rgb_mask_is_read_by_its_brightness():
    mask = rect_mask((32, 32), (8, 8, 24, 24), mode="RGB")
    assert np.array_equal(pixels(binary_mask(mask)), pixels(rect_mask((32, 32), (8, 8, 24, 24))))


def test_a_transparent_sketch_mask_is_read_from_its_alpha_channel():
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # black strokes on a transparent layer
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=(0, 0, 0, 255))
    assert np.array_equal(pixels(binary_mask(mask)), pixels(rect_mask((32, 32), (8, 8, 24, 24))))


def prepared_mask(mask: Image.Image, **settings) -> np.ndarray:
    """The pipeline mask for a same-size, whole-picture inpaint (so no resizing gets in the way)."""
    size = mask.size
    options = {"mask_blur_x": 0, "mask_blur_y": 0, "inpaint_full_res": False, **settings}
    prepared = inpaint(noise_image(*size), mask, *size, **options)
    assert prepared.mask is not None and prepared.mask.mode == "L" and prepared.mask.size == size
    return pixels(prepared.mask)


def test_prepare_binarises_the_mask():
    assert set(np.unique(prepared_mask(gradient_mask(256, 8)))) == {0, 255}


def test_prepare_inverts_the_mask_when_asked():
    mask = rect_mask((32, 32), (8, 8, 24, 24))
    assert np.array_equal(prepared_mask(mask, inpainting_mask_invert=True), 255 - pixels(mask))


def test_blur_softens_the_edges_but_only_within_the_kernel_radius():
    box = (20, 20, 60, 60)
    blurred = prepared_mask(rect_mask((80, 80), box), mask_blur_x=BLUR, mask_blur_y=BLUR)
    assert 0 < blurred[40, 20] < 255 and 0 < blurred[20, 40] < 255  # soft edges
    assert 100 < blurred[40, 20] < 160  # the edge of a blurred step is about half way
    assert (blurred[20 + BLUR_REACH : 60 - BLUR_REACH, 20 + BLUR_REACH : 60 - BLUR_REACH] == 255).all()
    assert (blurred[~near(box, (80, 80), BLUR_REACH)] == 0).all()


def test_blur_x_and_blur_y_are_separate():
    mask = rect_mask((80, 80), (20, 20, 60, 60))
    horizontal = pixels(blur_mask(mask, BLUR, 0))
    assert 0 < horizontal[40, 20] < 255  # the vertical edges are soft...
    assert horizontal[19, 40] == 0 and horizontal[20, 40] == 255  # ...the horizontal ones still sharp
    vertical = pixels(blur_mask(mask, 0, BLUR))
    assert 0 < vertical[20, 40] < 255
    assert vertical[40, 19] == 0 and vertical[40, 20] == 255


def test_blur_is_symmetric_and_keeps_an_all_white_mask_white():
    mask = rect_mask((63, 63), (21, 21, 42, 42))
    blurred = pixels(blur_mask(mask, BLUR, BLUR))
    assert np.array_equal(blurred, blurred[::-1, ::-1])
    assert (pixels(blur_mask(Image.new("L", (16, 16), 255), 8, 8)) == 255).all()


# ----------------------------------------------------------------------------------------------
# "Only masked": crop region
# ----------------------------------------------------------------------------------------------


def test_crop_region_is_the_mask_bounding_box_plus_padding():
    mask = rect_mask((128, 96), (40, 30, 60, 50))
    assert get_crop_region(mask) == (40, 30, 60, 50)
    assert get_crop_region(mask, 8) == (32, 22, 68, 58)
    assert get_crop_region(mask, 100) == (0, 0, 128, 96)
    assert get_crop_region(Image.new("L", (16, 16))) is None


def test_expand_crop_region_reaches_the_target_aspect_ratio_around_the_centre():
    assert expand_crop_region((32, 22, 68, 58), 64, 32, 128, 96) == (14, 22, 86, 58)
    assert expand_crop_region((32, 22, 68, 58), 32, 64, 128, 96) == (32, 4, 68, 76)


def test_expand_crop_region_slides_inside_the_image_and_stops_at_its_edges():
    assert expand_crop_region((0, 0, 20, 20), 64, 32, 128, 96) == (0, 0, 40, 20)
    assert expand_crop_region((110, 0, 128, 18), 64, 32, 128, 96) == (92, 0, 128, 18)
    assert expand_crop_region((0, 40, 128, 56), 32, 64, 128, 96) == (0, 0, 128, 96)  # too tall for the image


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 48), (48, 96)])
@pytest.mark.parametrize("padding", [0, 12])
def test_full_res_crop_contains_the_mask_plus_padding_with_the_target_aspect_ratio(width, height, padding):
    init, mask_box = noise_image(256, 192), (100, 70, 130, 110)
    prepared = inpaint(init, rect_mask(init.size, mask_box), width, height, inpaint_full_res_padding=padding)
    x1, y1, x2, y2 = prepared.crop_box
    reach = BLUR_REACH + padding  # the blurred mask reaches BLUR_REACH px beyond the painted box
    assert x1 <= mask_box[0] - reach and y1 <= mask_box[1] - reach
    assert x2 >= mask_box[2] + reach and y2 >= mask_box[3] + reach
    assert 0 <= x1 < x2 <= init.width and 0 <= y1 < y2 <= init.height
    assert abs((x2 - x1) - (y2 - y1) * width / height) <= 1
    assert prepared.image.size == prepared.mask.size == (width, height)
    assert prepared.output_size == init.size


def test_full_res_pipeline_inputs_are_the_crop_scaled_up():
    init = noise_image(128, 96)
    prepared = inpaint(
        init, rect_mask(init.size, (40, 30, 60, 50)), 144, 72, mask_blur_x=0, mask_blur_y=0, inpaint_full_res_padding=8
    )
    assert prepared.crop_box == (14, 22, 86, 58)  # 72x36, scaled 2x
    assert np.array_equal(pixels(prepared.image), pixels(resize_image(init.crop((14, 22, 86, 58)), 144, 72, RESIZE_JUST_RESIZE)))
    mask = pixels(prepared.mask)
    # The mask's 20x20 px square is now 40x40 at (52, 16); Lanczos rings a little near its edges.
    assert (mask[24:48, 60:84] >= 250).all() and (mask[26:46, 62:82] == 255).any()
    assert (mask[:8] == 0).all() and (mask[:, :40] == 0).all() and (mask[:, 104:] == 0).all()


# ----------------------------------------------------------------------------------------------
# finish(): only the masked area changes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", [0, 32])
def test_full_res_finish_keeps_the_original_outside_the_mask_and_paints_inside(padding):
    init, mask_box = noise_image(160, 128), (60, 50, 90, 80)
    prepared = inpaint(
        init, rect_mask(init.size, mask_box), 64, 64, mask_blur_x=BLUR, mask_blur_y=BLUR, inpaint_full_res_padding=padding
    )
    out = finish(solid((64, 64), RED), prepared)
    assert out.size == init.size and out.mode == "RGB"
    far = ~near(mask_box, init.size, BLUR_REACH)
    assert np.array_equal(pixels(out)[far], pixels(init)[far])
    inside = pixels(out)[mask_box[1] + BLUR_REACH : mask_box[3] - BLUR_REACH, mask_box[0] + BLUR_REACH : mask_box[2] - BLUR_REACH]
    assert inside.size and (inside == RED).all()


@pytest.mark.parametrize("mode", [RESIZE_JUST_RESIZE, RESIZE_CROP_AND_RESIZE, RESIZE_AND_FILL])
def test_whole_picture_finish_is_width_x_height(mode):
    init = noise_image(120, 80)
    prepared = inpaint(init, rect_mask(init.size, (40, 20, 80, 60)), 64, 48, mode, inpaint_full_res=False)
    assert prepared.image.size == prepared.mask.size == prepared.output_size == (64, 48)
    assert finish(solid((64, 48), RED), prepared).size == (64, 48)


def test_whole_picture_finish_keeps_the_original_outside_the_mask_and_paints_inside():
    init, mask_box = noise_image(96, 96), (30, 30, 66, 66)
    prepared = inpaint(init, rect_mask(init.size, mask_box), 96, 96, inpaint_full_res=False, mask_blur_x=BLUR, mask_blur_y=BLUR)
    out = pixels(finish(solid((96, 96), RED), prepared))
    far = ~near(mask_box, init.size, BLUR_REACH)
    assert np.array_equal(out[far], pixels(init)[far])
    # The overlay uses the mask doubled: everything at or above half the blurred mask is generated.
    assert (out[np.asarray(prepared.mask) >= 128] == RED).all()


def test_inverted_mask_keeps_the_painted_area():
    init, mask_box = noise_image(96, 96), (30, 30, 66, 66)
    prepared = inpaint(
        init,
        rect_mask(init.size, mask_box),
        96,
        96,
        inpaint_full_res=False,
        inpainting_mask_invert=True,
        mask_blur_x=0,
        mask_blur_y=0,
    )
    out = pixels(finish(solid((96, 96), RED), prepared))
    inside = near(mask_box, init.size, 0)
    assert np.array_equal(out[inside], pixels(init)[inside])
    assert (out[~inside] == RED).all()


def test_plain_img2img_has_no_mask_and_returns_the_generated_image():
    init = noise_image(100, 50).convert("RGBA")
    prepared = prepare(init, None, width=64, height=64, resize_mode=RESIZE_CROP_AND_RESIZE)
    assert prepared.mask is None and prepared.crop_box is None
    assert prepared.image.mode == "RGB" and prepared.image.size == (64, 64)
    generated = noise_image(64, 64, seed=9).convert("RGBA")
    out = finish(generated, prepared)
    assert out.mode == "RGB" and np.array_equal(pixels(out), pixels(generated.convert("RGB")))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
def test_init_images_of_any_mode_become_rgb_with_transparency_on_white(mode):
    init = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(init).rectangle((8, 8, 23, 23), fill=(0, 0, 0, 255))
    converted = init.convert(mode) if mode != "P" else init.convert("RGB").convert("P")
    prepared = prepare(converted, None, width=32, height=32, resize_mode=RESIZE_JUST_RESIZE)
    out = pixels(prepared.image)
    assert prepared.image.mode == "RGB"
    assert (out[16, 16] == 0).all()
    expected_corner = 0 if mode in ("L", "P") else 255  # only modes with alpha had transparency
    assert (out[0, 0] == expected_corner).all()


# ----------------------------------------------------------------------------------------------
# inpainting_fill ("Masked content")
# ----------------------------------------------------------------------------------------------


def fill_case(fill: int, full_res: bool = False, blur: int = BLUR):
    """A green image with a red square under the mask: (prepared image, same with ORIGINAL, pipeline mask)."""
    init = solid((96, 96), GREEN)
    init.paste(solid((32, 32), RED), (32, 32))
    mask = rect_mask(init.size, (32, 32, 64, 64))

    def run(fill: int) -> Image.Image:
        settings = InpaintSettings(
            inpainting_fill=fill, inpaint_full_res=full_res, inpaint_full_res_padding=16, mask_blur_x=blur, mask_blur_y=blur
        )
        return prepare(init, mask, width=96, height=96, resize_mode=RESIZE_JUST_RESIZE, settings=settings)

    prepared = run(fill)
    return pixels(prepared.image), pixels(run(ORIGINAL).image), np.asarray(prepared.mask)


@pytest.mark.parametrize("full_res", [False, True])
@pytest.mark.parametrize("fill", [FILL, LATENT_NOISE, LATENT_NOTHING])
def test_each_fill_changes_only_the_masked_area(fill, full_res):
    filled, original, mask = fill_case(fill, full_res=full_res)
    assert np.array_equal(filled[mask == 0], original[mask == 0])
    assert (filled[mask == 255] != original[mask == 255]).any(axis=-1).mean() > 0.9


def test_original_fill_leaves_the_init_image_alone():
    filled, original, _ = fill_case(ORIGINAL)
    assert np.array_equal(filled, original)


def test_fill_paints_the_hole_with_the_surrounding_colour():
    filled, _, mask = fill_case(FILL, blur=0)
    hole = filled[mask == 255]
    assert (np.abs(hole - GREEN) <= 2).all()  # green from around it, none of the red under the mask


def test_fill_with_a_blurred_mask_lets_a_little_of_the_soft_edge_through():
    filled, _, mask = fill_case(FILL)
    hole = filled[mask == 255]
    # As in A1111, the red under the soft edge is only partly masked, so some of it bleeds in; green dominates.
    assert (hole[:, 1] - hole[:, 0] > 100).all()


def test_latent_fills_prefill_the_pixels_as_fill_does():
    # A1111 fills the pixels first; the noise or zeros go into the latents (runtime/init_latents.py).
    filled, _, _ = fill_case(FILL)
    for fill in (LATENT_NOISE, LATENT_NOTHING):
        assert np.array_equal(fill_case(fill)[0], filled)


def test_unknown_fill_is_rejected():
    with pytest.raises(ValueError, match="inpainting_fill"):
        InpaintSettings(inpainting_fill=4)


# ----------------------------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------------------------


def test_a_mask_of_another_size_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match=r"^mask is 32x16 but the image is 64x48: send a mask of the same size$"):
        prepare(noise_image(64, 48), Image.new("L", (32, 16)), width=64, height=64, resize_mode=RESIZE_JUST_RESIZE)


def test_an_all_black_mask_with_only_masked_falls_back_to_plain_img2img():
    init = noise_image(80, 60)
    prepared = inpaint(init, Image.new("L", init.size), 64, 64)
    assert prepared.mask is None and prepared.crop_box is None
    assert np.array_equal(pixels(prepared.image), pixels(resize_image(init, 64, 64, RESIZE_JUST_RESIZE)))
    generated = noise_image(64, 64, seed=5)
    assert np.array_equal(pixels(finish(generated, prepared)), pixels(generated))


def test_an_all_black_mask_on_the_whole_picture_keeps_the_original():
    init = noise_image(64, 64)
    prepared = inpaint(init, Image.new("L", init.size), 64, 64, inpaint_full_res=False, inpainting_fill=FILL)
    assert (np.asarray(prepared.mask) == 0).all()
    assert np.array_equal(pixels(prepared.image), pixels(init))
    assert np.array_equal(pixels(finish(solid((64, 64), RED), prepared)), pixels(init))


def test_an_all_white_mask_with_only_masked_repaints_everything():
    init = noise_image(64, 64)
    prepared = inpaint(init, Image.new("L", init.size, 255), 64, 64, inpaint_full_res_padding=4)
    assert prepared.crop_box == (0, 0, 64, 64)
    assert (pixels(finish(solid((64, 64), RED), prepared)) == RED).all()
