"""GPU throughput of SD1.5-sized txt2img: plain diffusers fp16 versus Atelier's runtime settings.

Builds Stable Diffusion 1.5's full-size architecture from the shipped config folder
(`inference/worker/model_configs/sd15`, tokenizer included) with random weights: nothing is
downloaded, and speed does not depend on the weights' values. Two pipelines with identical weights
run the same prompts, alternating run by run so clock and thermal drift hit both alike:

  * baseline: `StableDiffusionPipeline` in fp16 as diffusers sets it up (its default attention
              processor, SDPA on torch 2; no other changes);
  * atelier:  the runtime settings Atelier's GPU worker uses: xformers attention when it imports,
              else SDPA; the UNet in channels_last; VAE slicing for batches of 8 or more; and with
              `--compile`, `torch.compile` of the UNet (mode max-autotune-no-cudagraphs, static
              shapes, so each batch size compiles once during its warm-up).

For each batch size it reports the denoising-loop rate (it/s, one iteration = one UNet call on
2 x batch latents with classifier-free guidance) and the end-to-end rate (images/s: prompt encoding,
the loop, VAE decode and conversion to PIL), medians over `--runs` runs after `--warmup` warm-up
runs per pipeline and batch size, and the peak GPU memory each call adds on top of the weights.
Usage (from the repository root):

    .venv/bin/python bench/gpu_pipeline.py [--batches 1,4,8,16] [--size 512] [--steps 20] [--runs 3]
                                           [--warmup 1] [--scheduler EulerAncestralDiscreteScheduler]
                                           [--compile] [--no-xformers] [--json out.json]
    .venv/bin/python bench/gpu_pipeline.py --smoke   # CPU, tiny-sd config, 64x64, 2 steps

Without a CUDA device it says so, runs the smoke run instead and exits 0. With `--compile`, each
batch size's warm-up includes max-autotune compilation (minutes per size on an H100); the warm-up
times are printed.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "a lighthouse on a cliff at dawn, dramatic clouds, highly detailed, 35mm photograph"
NEGATIVE_PROMPT = "blurry, low quality"
COMPILE_MODE = "max-autotune-no-cudagraphs"
VAE_SLICING_FROM_BATCH = 8


@dataclass
class Measurement:
    config: str
    batch: int
    seconds: list[float] = field(default_factory=list)  # one pipeline call each
    it_per_s: list[float] = field(default_factory=list)  # denoising loop, from step-end marks
    peak_extra_gib: float = 0.0  # GPU memory a call allocates on top of what was allocated before it

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median_seconds

    @property
    def median_it_per_s(self) -> float:
        return statistics.median(self.it_per_s)

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median_seconds": self.median_seconds,
            "images_per_s": self.images_per_s,
            "median_it_per_s": self.median_it_per_s,
        }


class StepClock:
    """Marks the end of each denoising step without synchronising: CUDA events on a GPU, wall time on a CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.marks: list[Any] = []

    def callback(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        import torch

        if self.device == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())
        return callback_kwargs

    def it_per_s(self) -> float:
        """Iterations per second between the first and the last step's end (the first step is excluded)."""
        if len(self.marks) < 2:
            return float("nan")
        if self.device == "cuda":
            elapsed = self.marks[0].elapsed_time(self.marks[-1]) / 1000.0
        else:
            elapsed = self.marks[-1] - self.marks[0]
        return (len(self.marks) - 1) / elapsed


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def build_pipeline(arch_name: str, *, device: str, dtype, seed: int, cache_dir: Path, scheduler_class: str | None):
    """A StableDiffusionPipeline of ``arch_name``'s architecture with random weights, from shipped configs only.

    ``scheduler_class`` (a diffusers class name) replaces the shipped scheduler, keeping its config.
    """
    import diffusers
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from inference.worker.checkpoints import get_architecture, materialize_config

    arch = get_architecture(arch_name)
    folder = materialize_config(arch, cache_dir)  # configs + CLIP tokenizer files, written locally
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(folder / "text_encoder" / "config.json"))
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, scheduler_class or scheduler_config["_class_name"]).from_config(scheduler_config)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer", local_files_only=True)
    pipe = StableDiffusionPipeline(
        vae=vae.to(dtype=dtype).eval(),
        text_encoder=text_encoder.to(dtype=dtype).eval(),
        tokenizer=tokenizer,
        unet=unet.to(dtype=dtype).eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def atelier_copy(baseline, *, device: str, use_xformers: bool, compile_unet: bool) -> tuple[Any, dict[str, Any]]:
    """A pipeline with the baseline's weights (own UNet and VAE copies) and Atelier's runtime settings."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(baseline.vae),
        text_encoder=baseline.text_encoder,  # unchanged by the settings: shared
        tokenizer=baseline.tokenizer,
        unet=copy.deepcopy(baseline.unet),
        scheduler=type(baseline.scheduler).from_config(baseline.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    settings: dict[str, Any] = {}
    attention = "sdpa"
    if use_xformers and device == "cuda" and importlib.util.find_spec("xformers") is not None:
        try:
            pipe.enable_xformers_memory_efficient_attention()
            attention = "xformers"
        except Exception as exc:  # noqa: BLE001 - an unusable xformers build falls back to SDPA
            print(f"xformers is installed but unusable ({exc.__class__.__name__}: {exc}); using SDPA")
    if attention == "sdpa":
        pipe.unet.set_attn_processor(AttnProcessor2_0())
    settings["attention"] = attention
    pipe.unet.to(memory_format=torch.channels_last)
    settings["unet_memory_format"] = "channels_last"
    settings["vae_slicing_from_batch"] = VAE_SLICING_FROM_BATCH
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet, mode=COMPILE_MODE, dynamic=False)
        settings["compile"] = COMPILE_MODE
    return pipe, settings


def attention_processor_name(pipe) -> str:
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    names = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    return "+".join(names)


def generate(pipe, *, batch: int, size: int, steps: int, seed: int, device: str, vae_slicing: bool) -> tuple[float, float, float]:
    """One pipeline call: (seconds, denoising it/s, peak extra GPU memory in GiB)."""
    import torch

    if vae_slicing:
        pipe.vae.enable_slicing()
    else:
        pipe.vae.disable_slicing()
    clock = StepClock(device)
    generator = torch.Generator(device).manual_seed(seed)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    _synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        pipe(
            prompt=[PROMPT] * batch,
            negative_prompt=[NEGATIVE_PROMPT] * batch,
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=7.0,
            generator=generator,
            callback_on_step_end=clock.callback,
            output_type="pil",
        )
    _synchronize(device)
    seconds = time.perf_counter() - started
    peak_extra = (torch.cuda.max_memory_allocated() - allocated_before) / 2**30 if device == "cuda" else 0.0
    return seconds, clock.it_per_s(), peak_extra


def run_benchmark(args: argparse.Namespace, *, device: str, arch_name: str) -> dict[str, Any]:
    import diffusers
    import torch

    dtype = torch.float16 if device == "cuda" else torch.float32
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    with tempfile.TemporaryDirectory(prefix="gpu-bench-configs-") as cache:
        built = time.perf_counter()
        baseline = build_pipeline(arch_name, device=device, dtype=dtype, seed=args.seed, cache_dir=Path(cache),
                                  scheduler_class=args.scheduler)
        baseline_attention = attention_processor_name(baseline)
        atelier, settings = atelier_copy(
            baseline, device=device, use_xformers=not args.no_xformers, compile_unet=args.compile
        )
        built = time.perf_counter() - built
    pipes = {"baseline": baseline, "atelier": atelier}
    settings["attention_processor"] = attention_processor_name(atelier)
    results: dict[tuple[str, int], Measurement] = {}
    for batch in batches:
        for name, pipe in pipes.items():
            vae_slicing = name == "atelier" and batch >= VAE_SLICING_FROM_BATCH
            warm = time.perf_counter()
            for _ in range(args.warmup):
                generate(pipe, batch=batch, size=args.size, steps=args.steps, seed=args.seed, device=device,
                         vae_slicing=vae_slicing)
            if args.warmup:
                print(f"  warm-up {name} batch {batch}: {time.perf_counter() - warm:.1f} s", flush=True)
            results[(name, batch)] = Measurement(config=name, batch=batch)
        for run in range(args.runs):
            order = list(pipes.items()) if run % 2 == 0 else list(reversed(pipes.items()))
            for name, pipe in order:
                vae_slicing = name == "atelier" and batch >= VAE_SLICING_FROM_BATCH
                seconds, it_per_s, peak = generate(pipe, batch=batch, size=args.size, steps=args.steps,
                                                   seed=args.seed + run, device=device, vae_slicing=vae_slicing)
                m = results[(name, batch)]
                m.seconds.append(seconds)
                m.it_per_s.append(it_per_s)
                m.peak_extra_gib = max(m.peak_extra_gib, peak)
    device_name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    return {
        "benchmark": "bench/gpu_pipeline.py",
        "architecture": arch_name,
        "weights": "random (shipped configs, nothing downloaded)",
        "device": device,
        "device_name": device_name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "xformers_installed": importlib.util.find_spec("xformers") is not None,
        "size": args.size,
        "steps": args.steps,
        "scheduler": type(baseline.scheduler).__name__,
        "guidance_scale": 7.0,
        "runs": args.runs,
        "warmup_runs": args.warmup,
        "build_seconds": built,
        "baseline": {"attention_processor": baseline_attention},
        "atelier": settings,
        "results": [m.as_json() for m in results.values()],
        "_measurements": results,
    }


def print_report(report: dict[str, Any]) -> None:
    results: dict[tuple[str, int], Measurement] = report["_measurements"]
    batches = sorted({batch for _, batch in results})
    atelier = report["atelier"]
    extras = [f"attention {atelier['attention']} ({atelier['attention_processor']})", "channels_last UNet",
              f"VAE slicing for batch >= {atelier['vae_slicing_from_batch']}"]
    if "compile" in atelier:
        extras.append(f"torch.compile({atelier['compile']})")
    print()
    print(f"{report['architecture']} architecture, {report['weights']}; {report['size']}x{report['size']}, "
          f"{report['steps']} steps, {report['scheduler']}, CFG {report['guidance_scale']}, {report['dtype']}")
    print(f"{report['device_name']} ({report['device']}), torch {report['torch']} (CUDA {report['cuda']}), "
          f"diffusers {report['diffusers']}, xformers {'installed' if report['xformers_installed'] else 'not installed'}")
    print(f"baseline: diffusers defaults, attention {report['baseline']['attention_processor']}")
    print(f"atelier:  {', '.join(extras)}")
    print(f"medians of {report['runs']} runs per batch, after {report['warmup_runs']} warm-up run(s) per pipeline "
          "and batch (excluded); it/s = denoising loop, img/s = end to end")
    head = f"{'it/s':>8}{'img/s':>8}{'s/call':>8}{'+GiB':>7}"
    print()
    print(f"{'':>6} | {'baseline':^31} | {'atelier':^31} | {'atelier/baseline':^17}")
    print(f"{'batch':>6} | {head} | {head} | {'it/s':>8}{'img/s':>8}")
    for batch in batches:
        cells = []
        for name in ("baseline", "atelier"):
            m = results[(name, batch)]
            cells.append(f"{m.median_it_per_s:8.2f}{m.images_per_s:8.2f}{m.median_seconds:8.3f}{m.peak_extra_gib:7.2f}")
        base, ours = results[("baseline", batch)], results[("atelier", batch)]
        ratio = f"{ours.median_it_per_s / base.median_it_per_s:8.2f}{ours.images_per_s / base.images_per_s:8.2f}"
        print(f"{batch:>6} | {cells[0]} | {cells[1]} | {ratio}")
    if 1 in batches:
        print()
        print(f"batch 1: baseline {results[('baseline', 1)].median_it_per_s:.2f} it/s, "
              f"atelier {results[('atelier', 1)].median_it_per_s:.2f} it/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,4,8,16", help="comma-separated batch sizes (images per call)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="measured runs per pipeline and batch")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs per pipeline and batch (excluded)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--scheduler", default="EulerAncestralDiscreteScheduler",
                        help="diffusers scheduler class for both pipelines (A1111's 'Euler a' by default; "
                             "'' keeps the shipped PNDMScheduler, which runs one UNet call more than --steps)")
    parser.add_argument("--compile", action="store_true", help=f"torch.compile the atelier UNet ({COMPILE_MODE})")
    parser.add_argument("--no-xformers", action="store_true", help="use SDPA in the atelier pipeline even if xformers imports")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run: tiny-sd config, 64x64, 2 steps, batches 1,2")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (it/s is measured between step ends)")

    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32: []" on every .to(dtype)
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random weights may give NaN pixels
    smoke = args.smoke
    if not smoke and not torch.cuda.is_available():
        reason = "torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        print(f"CUDA is not available here ({reason}; torch {torch.__version__}): the GPU benchmark cannot run. "
              "Running the CPU smoke run (--smoke) instead.")
        smoke = True
    if smoke:
        if args.compile:
            print("--compile is ignored in the smoke run")
        args.compile, args.size, args.steps = False, 64, 2
        args.batches, args.runs, args.warmup = "1,2", 1, 1
        report = run_benchmark(args, device="cpu", arch_name="tiny-sd")
        report["smoke"] = True
    else:
        report = run_benchmark(args, device="cuda", arch_name="sd15")
        report["smoke"] = False
    print_report(report)
    if args.json:
        payload = {k: v for k, v in report.items() if not k.startswith("_")}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
