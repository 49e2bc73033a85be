"""DeepCache step caching (the sd-webui-deepcache extension's options, `runtime/deepcache.py`): speed and image change.

Runs the worker's own `WorkerRuntime.generate` on one txt2img image, the same seed and prompt for
every configuration: no caching (the baseline) and each `--levels` cache level, with the
extension's schedule (`--share` of the steps in full first, then every `--rate`-th UNet call in
full). The configurations alternate run by run, so clock and thermal drift hit all alike. For each
it reports the median seconds per image (end to end: conditioning, the denoising loop, VAE
decode), the speed ratio against the baseline (baseline seconds / its seconds: above 1 is faster),
how many UNet calls ran cached, and how far its image is from the baseline's: the mean absolute
pixel difference (0-255) and the PSNR in dB (higher is closer; the same image is infinite). The
last line is one JSON object of those figures.

The model is the tiny random-weight checkpoint (`runtime/tiny/`, written to a temporary folder),
or with `--architecture sd15` SD1.5's full-size architecture with random weights from the shipped
configs (as `bench/gpu_pipeline.py`; about 1.7 GB written to a temporary folder), unless
`--checkpoint` names a real one (a single-file .safetensors). The tiny model's deep blocks are a
smaller share of its step than SD1.5's, and its VAE decode a larger one, so its speed ratio
understates what SD1.5 gains; with random weights the image difference only shows that caching
changes the picture, not how much a trained model's picture suffers. The checkpoint is loaded
before any timing (an untimed 64x64 call).

Usage (from the repository root):

    .venv/bin/python bench/deepcache.py [--checkpoint model.safetensors | --architecture sd15] [--size 512] [--steps 20]
                                        [--levels 0,5] [--share 0.4] [--rate 5] [--runs 2] [--warmup 1]
                                        [--device cpu] [--json out.json]
"""


from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "a lighthouse on a cliff at dawn, dramatic clouds, highly detailed"
NEGATIVE_PROMPT = "blurry, low quality"


def image_difference(image: Any, baseline: Any) -> tuple[float, float]:
    """(mean absolute pixel difference on 0-255, PSNR in dB; inf for the same image) of two RGB images."""
    import numpy as np

    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    b = np.asarray(baseline.convert("RGB"), dtype=np.float64)
    mean_abs = float(np.abs(a - b).mean())
    mse = float(((a - b) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return mean_abs, psnr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a single-file checkpoint (default: the tiny random-weight model)")
    parser.add_argument("--architecture", choices=("tiny", "sd15"), default="tiny",
                        help="without --checkpoint: the tiny model, or SD1.5's size with random weights")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--levels", default="0,5", help="comma-separated cache levels (LDM input blocks, 0-10)")
    parser.add_argument("--share", type=float, default=0.4, help="share of the steps run in full before caching")
    parser.add_argument("--rate", type=int, default=5, help="every UNet call whose index is a multiple of this runs in full")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per configuration (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration first")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    from a1111.samplers import resolve_sampler
    from a1111.deepcache import deepcache_pass
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec
    from runtime.tiny.model import write_tiny_checkpoint

    def random_sd15_checkpoint(folder: Path) -> Path:
        from bench.gpu_pipeline import build_pipeline, write_checkpoint

        pipe = build_pipeline("sd15", device="cpu", dtype=torch.float32, seed=0, cache_dir=folder / "configs",
                              scheduler_class=None)
        return write_checkpoint(pipe, folder / "sd15-random.safetensors")

    if args.threads:
        torch.set_num_threads(args.threads)
    levels: list[int | None] = [None] + [int(part) for part in args.levels.split(",") if part.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-deepcache-") as folder:
        if args.checkpoint is not None:
            checkpoint = args.checkpoint
        elif args.architecture == "sd15":
            checkpoint = random_sd15_checkpoint(Path(folder))
        else:
            checkpoint = write_tiny_checkpoint(Path(folder) / "tiny.safetensors")
        runtime = WorkerRuntime(device=args.device, cache_size=1, config_cache_dir=Path(folder) / "cache")
        sampler = resolve_sampler(args.sampler)
        base = GenerationSpec(
            checkpoint_path=str(checkpoint), checkpoint_sha256=f"bench:{checkpoint}", prompts=[PROMPT],
            negative_prompts=[NEGATIVE_PROMPT], seeds=[args.seed], steps=args.steps, cfg_scale=7.0,
            width=args.size, height=args.size, max_batch=1, scheduler_class=sampler.scheduler_class,
            scheduler_kwargs=sampler.scheduler_kwargs,
        )
        plans = {
            level: None if level is None else deepcache_pass(
                level=level, share=args.share, steps=args.steps, full_run_step_rate=args.rate
            )
            for level in levels
        }
        specs = {level: dataclasses.replace(base, deepcache=plan) for level, plan in plans.items()}
        runtime.generate(dataclasses.replace(base, steps=1, width=64, height=64))  # load the checkpoint, untimed
        unet = runtime.pipelines.get(base.checkpoint_path, base.checkpoint_sha256).unet
        deep_calls = [0]
        handle = unet.mid_block.resnets[0].register_forward_pre_hook(lambda *_: deep_calls.__setitem__(0, deep_calls[0] + 1))
        calls = [0]
        unet_handle = unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        seconds: dict[int | None, list[float]] = {level: [] for level in levels}
        images: dict[int | None, Any] = {}
        cached_calls: dict[int | None, tuple[int, int]] = {}
        for round_index in range(args.warmup + args.runs):
            for level in levels:  # alternating: drift hits every configuration alike
                calls[0] = deep_calls[0] = 0
                started = time.perf_counter()
                (image,) = runtime.generate(specs[level])
                if runtime.device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - started
                if round_index >= args.warmup:
                    seconds[level].append(elapsed)
                images[level] = image
                cached_calls[level] = (calls[0] - deep_calls[0], calls[0])  # a cached call never enters the mid block
        handle.remove()
        unet_handle.remove()

    baseline_seconds = statistics.median(seconds[None])
    model_name = args.checkpoint.name if args.checkpoint else f"{args.architecture} (random weights)"
    rows = []
    print(f"DeepCache, {args.size}x{args.size}, {args.steps} steps, {args.sampler}, device {runtime.device}, "
          f"model {model_name}, share {args.share}, rate {args.rate}, "
          f"median of {args.runs} run(s) after {args.warmup} warm-up")
    print(f"{'level':>6} {'cached':>7} {'s/image':>9} {'baseline':>9} {'speed x':>8} {'mean |diff|':>12} {'PSNR dB':>8}")
    for level in levels:
        median = statistics.median(seconds[level])
        mean_abs, psnr = image_difference(images[level], images[None])
        cached, total = cached_calls[level]
        rows.append({
            "level": level, "cached_calls": cached, "unet_calls": total,
            "seconds_per_image": round(median, 4), "baseline_seconds_per_image": round(baseline_seconds, 4),
            "seconds_each_run": [round(value, 4) for value in seconds[level]],
            "speed_ratio": round(baseline_seconds / median, 3), "mean_abs_pixel_difference": round(mean_abs, 3),
            "psnr_db": None if math.isinf(psnr) else round(psnr, 2),
        })
        shown = "off" if level is None else str(level)
        print(f"{shown:>6} {f'{cached}/{total}':>7} {median:>9.3f} {baseline_seconds:>9.3f} {baseline_seconds / median:>8.3f} "
              f"{mean_abs:>12.3f} {psnr:>8.2f}")
    result = {
        "bench": "deepcache", "size": args.size, "steps": args.steps, "sampler": args.sampler,
        "share": args.share, "rate": args.rate,
        "device": str(runtime.device), "model": model_name,
        "runs": args.runs, "warmup": args.warmup, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "results": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
