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
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.image_ab import HEADER, add_arguments, compare, finish, prepare, time_alternating  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, size=256, steps=20)
    parser.add_argument("--levels", default="0,5", help="comma-separated cache levels (LDM input blocks, 0-10)")
    parser.add_argument("--share", type=float, default=0.4, help="share of the steps run in full before caching")
    parser.add_argument("--rate", type=int, default=5, help="every UNet call whose index is a multiple of this runs in full")
    args = parser.parse_args(argv)

    from a1111.deepcache import deepcache_pass

    levels: list[int | None] = [None] + [int(part) for part in args.levels.split(",") if part.strip()]
    with prepare(args, "bench-deepcache-") as bench:
        specs = {
            level: dataclasses.replace(bench.base, deepcache=None if level is None else deepcache_pass(
                level=level, share=args.share, steps=args.steps, full_run_step_rate=args.rate))
            for level in levels
        }
        unet = bench.runtime.pipelines.get(bench.base.checkpoint_path, bench.base.checkpoint_sha256).unet
        calls = {"unet": 0, "deep": 0}  # a cached call never enters the mid block
        counters = [
            unet.register_forward_pre_hook(lambda *_: calls.__setitem__("unet", calls["unet"] + 1)),
            unet.mid_block.resnets[0].register_forward_pre_hook(lambda *_: calls.__setitem__("deep", calls["deep"] + 1)),
        ]
        cached_calls: dict[int | None, tuple[int, int]] = {}
        seconds, images = time_alternating(
            bench, specs, runs=args.runs, warmup=args.warmup,
            before_each=lambda _level: calls.update(unet=0, deep=0),
            after_each=lambda level: cached_calls.__setitem__(level, (calls["unet"] - calls["deep"], calls["unet"])),
        )
        for counter in counters:
            counter.remove()

    print(f"DeepCache, {args.size}x{args.size}, {args.steps} steps, {args.sampler}, device {bench.runtime.device}, "
          f"model {bench.model_name}, share {args.share}, rate {args.rate}, "
          f"median of {args.runs} run(s) after {args.warmup} warm-up")
    print(f"{'level':>6} {'cached':>7} {HEADER}")
    rows = []
    for level in levels:
        comparison = compare(seconds, images, level, baseline=None)
        cached, total = cached_calls[level]
        rows.append({"level": level, "cached_calls": cached, "unet_calls": total, **comparison.row()})
        shown = "off" if level is None else str(level)
        print(f"{shown:>6} {f'{cached}/{total}':>7} {comparison.columns()}")
    result = {"bench": "deepcache", "size": args.size, "steps": args.steps, "sampler": args.sampler,
              "share": args.share, "rate": args.rate}
    return finish(args, bench, result, rows)


if __name__ == "__main__":
    raise SystemExit(main())
