"""What the speed-against-image benches share (`token_merging.py`, `deepcache.py`): one txt2img
image through the worker's own `WorkerRuntime.generate`, a baseline spec and variants of it, the
same seed and prompt for all, timed in alternating rounds, each variant's median seconds beside
the baseline's and how far its image is from the baseline's.

A bench adds its own arguments, builds its variants from `base` (`prepare`), times them with
`time_alternating` and prints a row per variant from `compare`; `finish` prints (and writes) the
JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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


def add_arguments(parser: argparse.ArgumentParser, *, size: int, steps: int) -> None:
    """The model, timing and output arguments every such bench takes (`size`, `steps`: its defaults)."""
    parser.add_argument("--checkpoint", type=Path, help="a single-file checkpoint (default: the tiny random-weight model)")
    parser.add_argument("--architecture", choices=("tiny", "sd15"), default="tiny",
                        help="without --checkpoint: the tiny model, or SD1.5's size with random weights")
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--runs", type=int, default=2, help="timed runs per configuration (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration first")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")


@dataclass(frozen=True)
class Bench:
    runtime: Any  # runtime.engine.WorkerRuntime
    base: Any  # runtime.specs.GenerationSpec: the baseline, one image
    model_name: str


@contextmanager
def prepare(args: argparse.Namespace, prefix: str) -> Iterator[Bench]:
    """The runtime and the baseline spec on the chosen model (written to a temporary folder that
    lives as long as the block), the checkpoint already loaded (an untimed 64x64 call)."""
    import tempfile

    import torch

    from a1111.samplers import resolve_sampler
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec
    from runtime.tiny.model import write_tiny_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        folder = Path(name)
        if args.checkpoint is not None:
            checkpoint = args.checkpoint
        elif args.architecture == "sd15":
            from bench.gpu_pipeline import build_pipeline, write_checkpoint

            pipe = build_pipeline("sd15", device="cpu", dtype=torch.float32, seed=0, cache_dir=folder / "configs",
                                  scheduler_class=None)
            checkpoint = write_checkpoint(pipe, folder / "sd15-random.safetensors")
        else:
            checkpoint = write_tiny_checkpoint(folder / "tiny.safetensors")
        runtime = WorkerRuntime(device=args.device, cache_size=1, config_cache_dir=folder / "cache")
        sampler = resolve_sampler(args.sampler)
        base = GenerationSpec(
            checkpoint_path=str(checkpoint), checkpoint_sha256=f"bench:{checkpoint}", prompts=[PROMPT],
            negative_prompts=[NEGATIVE_PROMPT], seeds=[args.seed], steps=args.steps, cfg_scale=7.0,
            width=args.size, height=args.size, max_batch=1, scheduler_class=sampler.scheduler_class,
            scheduler_kwargs=sampler.scheduler_kwargs,
        )
        runtime.generate(replace(base, steps=1, width=64, height=64))  # load the checkpoint, untimed
        model_name = args.checkpoint.name if args.checkpoint else f"{args.architecture} (random weights)"
        yield Bench(runtime, base, model_name)


def time_alternating(
    bench: Bench, specs: Mapping[Hashable, Any], *, runs: int, warmup: int,
    after_each: Callable[[Hashable], None] | None = None, before_each: Callable[[Hashable], None] | None = None,
) -> tuple[dict[Hashable, list[float]], dict[Hashable, Any]]:
    """Each spec's timed seconds (the runs after `warmup`) and its last image; the specs alternate
    run by run, so clock and thermal drift hit every configuration alike. `before_each` and
    `after_each` are called around each run with its key (a bench's own counters)."""
    import torch

    seconds: dict[Hashable, list[float]] = {key: [] for key in specs}
    images: dict[Hashable, Any] = {}
    for round_index in range(warmup + runs):
        for key, spec in specs.items():
            if before_each is not None:
                before_each(key)
            started = time.perf_counter()
            (image,) = bench.runtime.generate(spec)
            if bench.runtime.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                seconds[key].append(elapsed)
            images[key] = image
            if after_each is not None:
                after_each(key)
    return seconds, images


@dataclass(frozen=True)
class Comparison:
    median: float
    baseline: float
    mean_abs: float
    psnr: float
    each_run: list[float]

    @property
    def speed(self) -> float:
        return self.baseline / self.median

    def row(self) -> dict[str, Any]:
        """The JSON figures of one configuration."""
        return {
            "seconds_per_image": round(self.median, 4), "baseline_seconds_per_image": round(self.baseline, 4),
            "seconds_each_run": [round(value, 4) for value in self.each_run],
            "speed_ratio": round(self.speed, 3), "mean_abs_pixel_difference": round(self.mean_abs, 3),
            "psnr_db": None if math.isinf(self.psnr) else round(self.psnr, 2),
        }

    def columns(self) -> str:
        """s/image, baseline, speed x, mean |diff|, PSNR dB (see `HEADER`)."""
        return (f"{self.median:>9.3f} {self.baseline:>9.3f} {self.speed:>8.3f} "
                f"{self.mean_abs:>12.3f} {self.psnr:>8.2f}")


HEADER = f"{'s/image':>9} {'baseline':>9} {'speed x':>8} {'mean |diff|':>12} {'PSNR dB':>8}"


def compare(seconds: Mapping[Hashable, list[float]], images: Mapping[Hashable, Any], key: Hashable,
            baseline: Hashable) -> Comparison:
    mean_abs, psnr = image_difference(images[key], images[baseline])
    return Comparison(statistics.median(seconds[key]), statistics.median(seconds[baseline]), mean_abs, psnr,
                      list(seconds[key]))


def finish(args: argparse.Namespace, bench: Bench, result: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    """`result` completed with the run's settings and machine, printed as the last line (and
    written to `--json`)."""
    import torch

    result.update({
        "device": str(bench.runtime.device), "model": bench.model_name,
        "runs": args.runs, "warmup": args.warmup, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "results": rows,
    })
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0
