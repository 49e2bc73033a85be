"""The worker runtime's features on a real GPU (fp16), on the tiny random-weight models: a checklist.

The test suite runs every feature on the CPU in float32. A GPU worker runs them in float16, with
channels_last, another attention kernel and, optionally, torch.compile: this script runs the same
features through `WorkerRuntime` on CUDA and checks what must still hold there:

  * the same seed gives the same image, and an image does not depend on its batch neighbours;
  * the acceleration settings (SDPA vs xformers, channels_last, torch.compile) change pixels by
    floating-point noise only;
  * LoRA weight 0 is the plain image and weight 1 is not; hypernetworks, embeddings, clip skip,
    a VAE file, hires fix, variation seeds, img2img and inpainting run, and inpainting leaves
    unmasked pixels as they were;
  * the SD 2.x and SDXL families generate finite images in fp16;
  * the two-tier model cache moves a pipeline to host RAM and back, with the same images after;
  * VAE tiling decodes a 1024x1024 image;
  * ControlNet (weight 0 is the plain image, on SD 1.x and SDXL), seamless tiling, the NSFW
    censor, an ESRGAN hires upscaler and A1111-weighted SDXL prompts run in fp16;
  * face restoration (RetinaFace + GFPGAN and CodeFormer) runs in fp16 and is deterministic.

Usage: `python bench/gpu_runtime_check.py [--json out.json] [--device cuda] [--only face]`. Prints one line per
check with its time, and exits 1 if any check failed. Without CUDA it runs on the CPU (slowly)
so the script itself can be checked anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from a1111.samplers import resolve_sampler  # noqa: E402
from runtime.acceleration import Acceleration  # noqa: E402
from a1111.controlnet import ControlUnit  # noqa: E402
from runtime.faces.codeformer import write_tiny_codeformer  # noqa: E402
from runtime.faces.detection import write_tiny_face_detector  # noqa: E402
from runtime.faces.gfpgan import write_tiny_gfpgan  # noqa: E402
from runtime.engine import WorkerRuntime  # noqa: E402
from runtime.safety import write_tiny_safety_checker  # noqa: E402
from runtime.specs import FaceRestorationSpec, GenerationSpec, HiresSpec, Img2ImgInputs, LoraSpec  # noqa: E402
from runtime.tiny.controlnet import write_tiny_controlnet  # noqa: E402
from runtime.tiny.embedding import write_tiny_embedding  # noqa: E402
from runtime.tiny.families import write_tiny_sd2_checkpoint, write_tiny_sdxl_checkpoint  # noqa: E402
from runtime.tiny.hypernetwork import write_tiny_hypernetwork  # noqa: E402
from runtime.tiny.lora import write_tiny_lora  # noqa: E402
from runtime.tiny.model import write_tiny_checkpoint, write_tiny_vae  # noqa: E402
from runtime.upscalers import write_tiny_esrgan  # noqa: E402

SIZE = 128
STEPS = 6


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference in 0-255 pixel units."""
    return float(np.abs(px(a) - px(b)).mean())


class Checklist:
    def __init__(self, only: str = "") -> None:
        self.results: list[dict[str, Any]] = []
        self.only = only.lower()  # run only the checks whose name holds this (the first always runs)

    def run(self, name: str, check: Callable[[], str]) -> None:
        if self.only and self.results and self.only not in name.lower():
            return
        started = time.perf_counter()
        try:
            detail, ok = check(), True
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, the others still run
            detail, ok = f"{type(exc).__name__}: {exc}", False
            traceback.print_exc()
        seconds = time.perf_counter() - started
        self.results.append({"check": name, "ok": ok, "seconds": round(seconds, 3), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'}  {seconds:7.2f}s  {name}: {detail}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", default="", help="run only the checks whose name contains this (and the first)")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode for the compile check ('' skips it)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gpu-runtime-check-"))
    checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
    other = write_tiny_checkpoint(folder / "tiny-other.safetensors", seed=7)
    euler = resolve_sampler("Euler")
    base = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256="tiny", prompts=["a red house"] * 2,
        negative_prompts=["blurry"] * 2, seeds=[11, 12], subseeds=[21, 22], steps=STEPS, cfg_scale=7.0,
        width=SIZE, height=SIZE, max_batch=8, scheduler_class=euler.scheduler_class,
        scheduler_kwargs=euler.scheduler_kwargs,
    )

    def runtime(**acceleration: Any) -> WorkerRuntime:
        return WorkerRuntime(device=args.device, cache_size=1, host_cache_size=2, config_cache_dir=folder / "cache",
                             acceleration=Acceleration(**acceleration))

    rt = runtime()  # the defaults a GPU worker runs with
    plain: list[Image.Image] = []
    checks = Checklist(args.only)
    print(f"device {rt.describe_device()[0]}, dtype {rt.dtype}, torch {torch.__version__}")

    def same_seed() -> str:
        plain.extend(rt.generate(base))
        again = rt.generate(base)
        alone = rt.generate(dataclasses.replace(base, prompts=base.prompts[1:], negative_prompts=base.negative_prompts[1:],
                                                seeds=base.seeds[1:], subseeds=base.subseeds[1:]))
        expect(all(np.isfinite(px(image)).all() for image in plain), "non-finite pixels")
        expect(diff(again[0], plain[0]) == 0, f"same seed differs by {diff(again[0], plain[0]):.3f}")
        expect(diff(alone[0], plain[1]) < 1.0, f"image depends on its batch neighbour ({diff(alone[0], plain[1]):.3f})")
        expect(diff(plain[0], plain[1]) > 1.0, "two seeds gave the same image")
        return f"repeat diff 0, batch-of-1 vs batch-of-2 diff {diff(alone[0], plain[1]):.3f}"

    def settings_are_noise_only() -> str:
        reference = runtime(attention="sdpa", channels_last="off").generate(base)
        detail = []
        for name, acceleration in {"channels_last": {"channels_last": "on"}, "xformers": {"attention": "xformers"}}.items():
            images = runtime(**acceleration).generate(base)
            d = diff(images[0], reference[0])
            expect(d < 2.0, f"{name} changes the image by {d:.3f}")
            detail.append(f"{name} {d:.3f}")
        return "mean |diff| vs plain SDPA: " + ", ".join(detail)

    def compiled() -> str:
        if not args.compile_mode:
            return "skipped"
        rt_compiled = runtime(compile_mode=args.compile_mode)
        started = time.perf_counter()
        first = rt_compiled.generate(base)
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        rt_compiled.generate(base)
        warm_seconds = time.perf_counter() - started
        d = diff(first[0], plain[0])
        expect(d < 2.0, f"compiled UNet changes the image by {d:.3f}")
        return f"mode {args.compile_mode}: first call {first_seconds:.1f}s (compiles), next {warm_seconds:.2f}s, diff {d:.3f}"

    def lora() -> str:
        path = write_tiny_lora(folder / "lora.safetensors", seed=3)
        zero = rt.generate(dataclasses.replace(base, loras=[LoraSpec(str(path), "lora", 0.0, 0.0)]))
        full = rt.generate(dataclasses.replace(base, loras=[LoraSpec(str(path), "lora", 1.0, 1.0)]))
        back = rt.generate(base)
        expect(diff(zero[0], plain[0]) < 0.5, f"weight 0 differs from no LoRA by {diff(zero[0], plain[0]):.3f}")
        expect(diff(full[0], plain[0]) > 1.0, "weight 1 changed nothing")
        expect(diff(back[0], plain[0]) == 0, "the LoRA stayed applied after its batch")
        return f"weight 0 diff {diff(zero[0], plain[0]):.3f}, weight 1 diff {diff(full[0], plain[0]):.2f}, unapplied after"

    def conditioning_extras() -> str:
        pipeline = rt.pipelines.get(str(checkpoint), "tiny")
        width = pipeline.text_encoder.config.hidden_size
        hyper = write_tiny_hypernetwork(folder / "hyper.pt", width=pipeline.unet.config.cross_attention_dim, seed=2)
        embedding = write_tiny_embedding(folder / "style.safetensors", width=width, seed=4)
        spec = dataclasses.replace(
            base, prompts=["a (red:1.4) house, style [blue]"] * 2, clip_skip=2,
            hypernetworks=[(str(hyper), "hyper", 0.8)], embeddings=[("style", str(embedding), "style")],
        )
        images = rt.generate(spec)
        expect(all(np.isfinite(px(image)).all() for image in images), "non-finite pixels")
        expect(diff(images[0], plain[0]) > 1.0, "weights, clip skip, hypernetwork and embedding changed nothing")
        return f"diff vs plain {diff(images[0], plain[0]):.2f}"

    def vae_file() -> str:
        vae = write_tiny_vae(folder / "vae.safetensors")
        images = rt.generate(dataclasses.replace(base, vae_path=str(vae), vae_sha256="vae"))
        expect(diff(images[0], plain[0]) > 1.0, "the VAE file changed nothing")
        return f"diff vs checkpoint VAE {diff(images[0], plain[0]):.2f}"

    def hires_and_variation() -> str:
        hires = HiresSpec(width=SIZE * 2, height=SIZE * 2, upscaler="Latent", steps=STEPS, denoising_strength=0.5)
        big = rt.generate(dataclasses.replace(base, hires=hires))
        expect(big[0].size == (SIZE * 2, SIZE * 2), f"hires size {big[0].size}")
        varied = rt.generate(dataclasses.replace(base, subseed_strength=0.3))
        none = rt.generate(dataclasses.replace(base, subseed_strength=0.0))
        expect(diff(none[0], plain[0]) == 0, "variation strength 0 is not the plain image")
        expect(diff(varied[0], plain[0]) > 1.0, "variation strength 0.3 changed nothing")
        return f"hires {big[0].size}, variation 0.3 diff {diff(varied[0], plain[0]):.2f}"

    def img2img_and_inpaint() -> str:
        init = plain[0]
        mask = Image.new("L", (SIZE, SIZE))
        mask.paste(255, (SIZE // 4, SIZE // 4, SIZE // 2, SIZE // 2))
        spec = dataclasses.replace(base, prompts=base.prompts[:1], negative_prompts=base.negative_prompts[:1],
                                   seeds=base.seeds[:1], subseeds=base.subseeds[:1])
        moved = rt.generate(dataclasses.replace(spec, img2img=Img2ImgInputs([init], [None], denoising_strength=0.6)))[0]
        painted = rt.generate(dataclasses.replace(spec, img2img=Img2ImgInputs([init], [mask], denoising_strength=0.9)))[0]
        outside = np.asarray(mask) == 0
        outside[SIZE // 4 - 8: SIZE // 2 + 8, SIZE // 4 - 8: SIZE // 2 + 8] = False  # the blurred edge
        unmasked = float(np.abs(px(painted) - px(init))[outside].mean())
        expect(unmasked < 1.0, f"inpainting changed unmasked pixels by {unmasked:.3f}")
        expect(diff(moved, init) > 1.0, "img2img changed nothing")
        return f"img2img diff {diff(moved, init):.2f}, inpaint unmasked diff {unmasked:.3f}"

    def families() -> str:
        detail = []
        for name, writer in {"sd2": write_tiny_sd2_checkpoint, "sdxl": write_tiny_sdxl_checkpoint}.items():
            path = writer(folder / f"tiny-{name}.safetensors")
            spec = dataclasses.replace(base, checkpoint_path=str(path), checkpoint_sha256=name)
            images = rt.generate(spec)
            again = rt.generate(dataclasses.replace(spec, img2img=Img2ImgInputs(images, [None, None], 0.5)))
            expect(all(np.isfinite(px(image)).all() for image in images + again), f"{name}: non-finite pixels")
            expect(px(images[0]).std() > 0, f"{name}: a flat image")
            detail.append(f"{name} txt2img+img2img {images[0].size}")
        return ", ".join(detail)

    def cache_tiers() -> str:
        tiers = runtime()
        first = tiers.generate(base)
        tiers.generate(dataclasses.replace(base, checkpoint_path=str(other), checkpoint_sha256="other"))
        expected_host = ["tiny"] if tiers.pipelines.host_capacity else []
        expect(tiers.pipelines.cached() == expected_host, f"host tier holds {tiers.pipelines.cached()}")
        restored = tiers.generate(base)
        expected_loads = 2 if tiers.pipelines.host_capacity else 3  # on a CPU, RAM is the device: one tier
        expect(tiers.pipelines.loads == expected_loads, f"{tiers.pipelines.loads} loads from disk")
        expect(diff(restored[0], first[0]) == 0, "the image changed after a round trip through host RAM")
        return f"loads {tiers.pipelines.loads}, restores {tiers.pipelines.restores}, device {tiers.pipelines.loaded()}, host {tiers.pipelines.cached()}"

    def vae_tiling() -> str:
        spec = dataclasses.replace(base, width=1024, height=1024, steps=2, prompts=base.prompts[:1],
                                   negative_prompts=base.negative_prompts[:1], seeds=base.seeds[:1], subseeds=[])
        tiled = runtime(vae_tiling_from_pixels=512 * 512).generate(spec)[0]
        whole = runtime(vae_tiling_from_pixels=0).generate(spec)[0]
        expect(tiled.size == (1024, 1024), f"size {tiled.size}")
        return f"1024x1024 tiled vs whole decode diff {diff(tiled, whole):.2f}"

    def controlnet() -> str:
        model = write_tiny_controlnet(folder / "tiny_canny.safetensors")
        picture = Image.new("RGB", (SIZE, SIZE), "white")
        picture.paste((0, 0, 0), (SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4))
        unit = ControlUnit(model_path=str(model), model_sha256="c" * 64, image=picture, module="canny")
        zero = rt.generate(dataclasses.replace(base, controlnet=[dataclasses.replace(unit, weight=0.0)]))
        full = rt.generate(dataclasses.replace(base, controlnet=[unit]))
        expect(diff(zero[0], plain[0]) < 0.5, f"weight 0 differs from no unit by {diff(zero[0], plain[0]):.3f}")
        expect(diff(full[0], plain[0]) > 1.0, "a ControlNet unit changed nothing")
        return f"weight 0 diff {diff(zero[0], plain[0]):.3f}, weight 1 diff {diff(full[0], plain[0]):.2f}"

    def controlnet_xl() -> str:
        path = write_tiny_sdxl_checkpoint(folder / "tiny-sdxl-cn.safetensors")
        model = write_tiny_controlnet(folder / "tiny_canny_xl.safetensors", base="sdxl")
        spec = dataclasses.replace(base, checkpoint_path=str(path), checkpoint_sha256="sdxl-cn")
        picture = Image.new("RGB", (SIZE, SIZE), "white")
        picture.paste((0, 0, 0), (SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4))
        unit = ControlUnit(model_path=str(model), model_sha256="x" * 64, image=picture, module="canny")
        plain_xl = rt.generate(spec)
        zero = rt.generate(dataclasses.replace(spec, controlnet=[dataclasses.replace(unit, weight=0.0)]))
        full = rt.generate(dataclasses.replace(spec, controlnet=[unit]))
        expect(np.isfinite(px(full[0])).all(), "non-finite pixels")
        expect(diff(zero[0], plain_xl[0]) < 0.5, f"weight 0 differs from no unit by {diff(zero[0], plain_xl[0]):.3f}")
        expect(diff(full[0], plain_xl[0]) > 1.0, "an SDXL ControlNet unit changed nothing")
        return f"weight 0 diff {diff(zero[0], plain_xl[0]):.3f}, weight 1 diff {diff(full[0], plain_xl[0]):.2f}"

    def face_restoration() -> str:
        detector = write_tiny_face_detector(folder / "detection_Resnet50_Final.pth")
        nets = {"GFPGAN": write_tiny_gfpgan(folder / "GFPGANv1.4.pth"),
                "CodeFormer": write_tiny_codeformer(folder / "codeformer-v0.1.0.pth")}
        detail = []
        for name, path in nets.items():
            face = FaceRestorationSpec(restorer=name, model_path=str(path), model_sha256=name,
                                       detector_path=str(detector), detector_sha256="det")
            restored = rt.restore_faces(list(plain), face)
            again = rt.restore_faces(list(plain), face)
            expect(diff(restored[0], plain[0]) > 0.5, f"{name} changed nothing")
            expect(diff(restored[0], again[0]) == 0, f"{name} is not deterministic")
            detail.append(f"{name} diff {diff(restored[0], plain[0]):.2f}")
        return ", ".join(detail)

    def tiling_censor_upscaler() -> str:
        tiled = rt.generate(dataclasses.replace(base, tiling=True))
        expect(diff(tiled[0], plain[0]) > 1.0, "tiling changed nothing")
        expect(diff(rt.generate(base)[0], plain[0]) == 0, "tiling stayed on after its batch")
        censoring = WorkerRuntime(device=args.device, cache_size=1, config_cache_dir=folder / "cache",
                                  safety_checker_dir=write_tiny_safety_checker(folder / "checker", flag_everything=True))
        _, flags = censoring.censor(censoring.generate(base))
        expect(flags == [True, True], f"censor flags {flags}")
        upscaler = write_tiny_esrgan(folder / "RealESRGAN_x4plus.pth")
        hires = HiresSpec(width=SIZE * 2, height=SIZE * 2, upscaler="R-ESRGAN 4x+", steps=STEPS, denoising_strength=0.4,
                          upscaler_path=str(upscaler), upscaler_sha256="esrgan")
        big = rt.generate(dataclasses.replace(base, hires=hires))
        expect(big[0].size == (SIZE * 2, SIZE * 2) and np.isfinite(px(big[0])).all(), "ESRGAN hires failed")
        return f"tiling diff {diff(tiled[0], plain[0]):.2f}, censor flags {flags}, ESRGAN hires {big[0].size}"

    def sdxl_weighting() -> str:
        path = write_tiny_sdxl_checkpoint(folder / "tiny-sdxl-weights.safetensors")
        spec = dataclasses.replace(base, checkpoint_path=str(path), checkpoint_sha256="sdxl-w")
        plain_xl = rt.generate(spec)
        weighted = rt.generate(dataclasses.replace(spec, prompts=["a (red:1.6) house BREAK at night"] * 2))
        expect(np.isfinite(px(weighted[0])).all(), "non-finite pixels")
        expect(diff(weighted[0], plain_xl[0]) > 0.5, "weights changed nothing")
        return f"weighted vs plain diff {diff(weighted[0], plain_xl[0]):.2f}"

    checks.run("same seed, same image; batch-independent", same_seed)
    checks.run("acceleration settings change pixels by noise only", settings_are_noise_only)
    checks.run("torch.compile", compiled)
    checks.run("LoRA weight 0 / 1", lora)
    checks.run("prompt weights, clip skip, hypernetwork, embedding", conditioning_extras)
    checks.run("VAE file", vae_file)
    checks.run("hires fix and variation seeds", hires_and_variation)
    checks.run("img2img and inpainting", img2img_and_inpaint)
    checks.run("SD 2.x and SDXL in fp16", families)
    checks.run("model cache: device and host-RAM tiers", cache_tiers)
    checks.run("VAE tiling", vae_tiling)
    checks.run("ControlNet weight 0 / 1", controlnet)
    checks.run("SDXL ControlNet weight 0 / 1", controlnet_xl)
    checks.run("face restoration: GFPGAN, CodeFormer", face_restoration)
    checks.run("tiling, NSFW censor, ESRGAN hires upscaler", tiling_censor_upscaler)
    checks.run("SDXL with A1111 prompt weighting", sdxl_weighting)
    failed = [r["check"] for r in checks.results if not r["ok"]]
    print(f"\n{len(checks.results) - len(failed)} of {len(checks.results)} checks passed on {rt.describe_device()[0]}")
    if args.json:
        args.json.write_text(json.dumps({"device": rt.describe_device()[0], "torch": torch.__version__,
                                         "results": checks.results}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
