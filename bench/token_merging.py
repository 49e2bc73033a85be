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
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.image_ab import HEADER, add_arguments, compare, finish, prepare, time_alternating  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, size=512, steps=4)
    parser.add_argument("--ratios", default="0.3,0.5", help="comma-separated ratios besides the baseline 0")
    args = parser.parse_args(argv)

    ratios = [0.0] + [float(part) for part in args.ratios.split(",") if part.strip()]
    with prepare(args, "bench-tome-") as bench:
        specs = {ratio: dataclasses.replace(bench.base, token_merging_ratio=ratio) for ratio in ratios}
        seconds, images = time_alternating(bench, specs, runs=args.runs, warmup=args.warmup)

    print(f"token merging, {args.size}x{args.size}, {args.steps} steps, {args.sampler}, device {bench.runtime.device}, "
          f"model {bench.model_name}, median of {args.runs} run(s) after {args.warmup} warm-up")
    print(f"{'ratio':>6} {HEADER}")
    rows = []
    for ratio in ratios:
        comparison = compare(seconds, images, ratio, baseline=0.0)
        rows.append({"ratio": ratio, **comparison.row()})
        print(f"{ratio:>6.2f} {comparison.columns()}")
    result = {"bench": "token_merging", "size": args.size, "steps": args.steps, "sampler": args.sampler}
    return finish(args, bench, result, rows)


if __name__ == "__main__":
    raise SystemExit(main())
