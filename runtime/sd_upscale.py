"""img2img's "SD upscale" in the worker: each image's init image upscaled, cut into tiles, the tiles
run through the ordinary img2img chunks, and blended back (no Django).

`WorkerRuntime` hands over its own chunk runner (`generate`) and its upscaler cache (`load_upscaler`):
each image of the spec becomes a tile spec (the tiles as init images, A1111's tile seeds, one pipeline
call per `batch_size` tiles) whose steps are reported within that image's own chunk, so a job's
progress counts every tile. The tile grid, seeds and blending are A1111's (`a1111/sd_upscale.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from PIL import Image

from a1111.sd_upscale import combine_tiles, split_tiles, tile_grid, tile_seed, tile_subseed
from runtime.specs import GenerationSpec, Img2ImgInputs, SdUpscaleSpec
from runtime.upscalers import RRDBNet, upscale

StepCallback = Callable[[int, int], None]  # (chunk index, steps done in it), as runtime/engine.py's
PreviewCallback = Callable[[int, int, Image.Image], None]
ChunkRunner = Callable[[GenerationSpec, StepCallback | None, PreviewCallback | None], list[Image.Image | None]]


def upscaled_init(image: Image.Image, run: SdUpscaleSpec, load_upscaler: Callable[[str, str], RRDBNet]) -> Image.Image:
    """The init image at SD upscale's size: A1111's upscaler by name ("None" keeps the image as it is)."""
    picture = image.convert("RGB")
    if run.upscaler == "None":
        return picture
    width, height = int(picture.width * run.scale_factor), int(picture.height * run.scale_factor)
    if run.upscaler_path:
        return upscale(load_upscaler(run.upscaler_path, run.upscaler_sha256), picture, width=width, height=height)
    resample = Image.Resampling.NEAREST if run.upscaler == "Nearest" else Image.Resampling.LANCZOS
    return picture.resize((width, height), resample)


def tile_spec(spec: GenerationSpec, run: SdUpscaleSpec, img2img: Img2ImgInputs, position: int, tiles: list[Image.Image]) -> GenerationSpec:
    """The img2img batch of one image's tiles: its prompt for each, A1111's tile seeds, `batch_size` per call."""
    count, variation = len(tiles), spec.subseed_strength > 0
    return dataclasses.replace(
        spec, sd_upscale=None, hires=None, preview_images=(),
        prompts=[spec.prompts[position]] * count, negative_prompts=[spec.negative_prompts[position]] * count,
        seeds=[tile_seed(spec.seeds[position], k, run.batch_size, variation=variation) for k in range(count)],
        subseeds=[tile_subseed(spec.subseeds[position], k, run.batch_size) for k in range(count)] if spec.subseeds else [],
        img2img=dataclasses.replace(img2img, init_images=tiles, masks=[None] * count, resize_mode=0),
        max_batch=run.batch_size, chunk_starts=tuple(range(0, count, run.batch_size)),
    )


def sd_upscale_images(
    spec: GenerationSpec, run: SdUpscaleSpec, img2img: Img2ImgInputs, *, generate: ChunkRunner,
    load_upscaler: Callable[[str, str], RRDBNet], on_step: StepCallback | None, on_preview: PreviewCallback | None,
) -> list[Image.Image | None]:
    """A1111's SD upscale of each image of `spec` in turn (each its own chunk). Progress counts every
    tile call's steps within the image's chunk; an image whose tiles were skipped or cancelled is None."""
    steps_per_call = int(spec.steps * img2img.denoising_strength)
    upscaled: dict[int, Image.Image] = {}  # by init image identity: every upscale of one image shares it
    images: list[Image.Image | None] = []
    for position in range(len(spec.seeds)):
        init = img2img.init_images[position]
        if id(init) not in upscaled:
            upscaled[id(init)] = upscaled_init(init, run, load_upscaler)
        picture = upscaled[id(init)]
        grid = tile_grid(picture.width, picture.height, tile_w=spec.width, tile_h=spec.height, overlap=run.overlap)

        def tile_step(tile_call: int, step: int, position: int = position) -> None:
            if on_step is not None:
                on_step(position, tile_call * steps_per_call + step)

        def tile_preview(tile_call: int, tile: int, preview: Image.Image, position: int = position) -> None:
            if on_preview is not None:
                on_preview(position, position, preview)

        done = generate(tile_spec(spec, run, img2img, position, split_tiles(picture, grid)), tile_step, tile_preview)
        kept = [tile for tile in done if tile is not None]
        images.append(combine_tiles(kept, grid) if len(kept) == len(done) else None)
    return images
