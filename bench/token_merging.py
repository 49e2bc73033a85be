"""Token merging (A1111's `token_merging_ratio`, `runtime/token_merging.py`): speed and image change.

Runs the worker's own `WorkerRuntime.generate` on one txt2img image, the same seed and prompt for
every configuration: ratio 0 (the baseline: no merging) and each `--ratios` value. The
configurations alternate run by run, so clock and thermal drift hit all alike. For each it reports
the median seconds per image (end to end: conditioning, the denoising loop, VAE decode), the speed
ratio against the baseline (baseline seconds / its seconds: above 1 is faster), and how far its image
is from the baseline's: the mean absolute pixel difference (0-255) and the PSNR in dB (higher is
closer; the same image is infinite). The last line is one JSON object of those figures.

The model is the tiny random-weight checkpoint (`runtime/tiny/`, written to a temporary folder),
or with `--architecture sd15` SD1.5's full-size architecture with random weights from the shipped
configs (as `bench/gpu_pipeline.py`; about 1.7 GB written to a temporary folder), unless
`--checkpoint` names a real one (a single-file .safetensors). The tiny model's widths are small, so
attention is a small part of its step and its speed ratio understates what SD1.5 gains; with random
weights the image difference only shows that merging changes the picture, not how much a trained
model's picture suffers. The checkpoint is loaded before any timing (an untimed 64x64 call).

Usage (from the repository root):

    .venv/bin/python bench/token_merging.py [--checkpoint model.safetensors | --architecture sd15] [--size 512] [--steps 4]
                                            [--ratios 0.3,0.5] [--runs 2] [--warmup 1] [--device cpu]
                                            [--json out.json]
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
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--ratios", default="0.3,0.5", help="comma-separated ratios besides the baseline 0")
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
    ratios = [0.0] + [float(part) for part in args.ratios.split(",") if part.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-tome-") as folder:
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
        specs = {ratio: dataclasses.replace(base, token_merging_ratio=ratio) for ratio in ratios}
        runtime.generate(dataclasses.replace(base, steps=1, width=64, height=64))  # load the checkpoint, untimed
        seconds: dict[float, list[float]] = {ratio: [] for ratio in ratios}
        images: dict[float, Any] = {}
        for round_index in range(args.warmup + args.runs):
            for ratio in ratios:  # alternating: drift hits every configuration alike
                started = time.perf_counter()
                (image,) = runtime.generate(specs[ratio])
                if runtime.device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - started
                if round_index >= args.warmup:
                    seconds[ratio].append(elapsed)
                images[ratio] = image

    baseline_seconds = statistics.median(seconds[0.0])
    model_name = args.checkpoint.name if args.checkpoint else f"{args.architecture} (random weights)"
    rows = []
    print(f"token merging, {args.size}x{args.size}, {args.steps} steps, {args.sampler}, device {runtime.device}, "
          f"model {model_name}, "
          f"median of {args.runs} run(s) after {args.warmup} warm-up")
    print(f"{'ratio':>6} {'s/image':>9} {'baseline':>9} {'speed x':>8} {'mean |diff|':>12} {'PSNR dB':>8}")
    for ratio in ratios:
        median = statistics.median(seconds[ratio])
        mean_abs, psnr = image_difference(images[ratio], images[0.0])
        rows.append({
            "ratio": ratio, "seconds_per_image": round(median, 4), "baseline_seconds_per_image": round(baseline_seconds, 4),
            "seconds_each_run": [round(value, 4) for value in seconds[ratio]],
            "speed_ratio": round(baseline_seconds / median, 3), "mean_abs_pixel_difference": round(mean_abs, 3),
            "psnr_db": None if math.isinf(psnr) else round(psnr, 2),
        })
        print(f"{ratio:>6.2f} {median:>9.3f} {baseline_seconds:>9.3f} {baseline_seconds / median:>8.3f} "
              f"{mean_abs:>12.3f} {psnr:>8.2f}")
    result = {
        "bench": "token_merging", "size": args.size, "steps": args.steps, "sampler": args.sampler,
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
