"""GPU throughput of SD1.5-sized txt2img: plain diffusers fp16 versus Atelier's runtime settings.

Builds Stable Diffusion 1.5's full-size architecture from the shipped config folder
(`runtime/checkpoints/model_configs/sd15`, tokenizer included) with random weights: nothing is
downloaded, and speed does not depend on the weights' values. Two pipelines with identical weights
run the same prompts, alternating run by run so clock and thermal drift hit both alike:

  * baseline: `StableDiffusionPipeline` in fp16 as diffusers sets it up (its default attention
              processor, SDPA on torch 2; no other changes);
  * atelier:  Atelier's worker itself: the same weights written as a single-file LDM checkpoint,
              loaded by `WorkerRuntime` (the object a Celery worker owns) with the acceleration
              settings a GPU worker uses by default (`runtime/acceleration.py`: xformers
              when it imports, else SDPA; contiguous UNet (channels_last with --channels-last on); VAE slicing from batch 8), and run
              through `WorkerRuntime.generate` as a job batch: A1111 prompt conditioning, one CPU
              generator per image, the worker's step callback. With `--compile MODE`, the
              worker's `ATELIER_WORKER_COMPILE=MODE` (each batch size compiles during its warm-up).

For each batch size it reports the denoising-loop rate (it/s, one iteration = one UNet call on
2 x batch latents with classifier-free guidance) and the end-to-end rate (images/s: prompt encoding,
the loop, VAE decode and conversion to PIL), medians over `--runs` runs after `--warmup` warm-up
runs per pipeline and batch size, and the peak GPU memory each call adds on top of the weights.
Usage (from the repository root):

    .venv/bin/python bench/gpu_pipeline.py [--batches 1,4,8,16] [--size 512] [--steps 20] [--runs 3]
                                           [--warmup 1] [--scheduler EulerAncestralDiscreteScheduler]
                                           [--compile MODE] [--attention auto|sdpa|xformers]
                                           [--json out.json]
    .venv/bin/python bench/gpu_pipeline.py --smoke   # CPU, tiny-sd config, 64x64, 2 steps

Without a CUDA device it says so, runs the smoke run instead and exits 0. With `--compile`, each
batch size's warm-up includes compilation (max-autotune modes take minutes per size on an H100);
the warm-up times are printed.
"""

from __future__ import annotations

import argparse
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

    from runtime.checkpoints.loading import get_architecture, materialize_config

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


def write_checkpoint(pipe, path: Path) -> Path:
    """The pipeline's weights as one LDM-layout safetensors file (what users drop in), fp16."""
    import torch

    from runtime.tiny.families import components_to_single_file
    from runtime.tiny.model import save_safetensors_atomically

    components = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
    return save_safetensors_atomically(components_to_single_file(components, dtype=torch.float16), path)


class AtelierRunner:
    """`WorkerRuntime.generate` as a pipeline-like callable for the measuring loop."""

    def __init__(self, checkpoint: Path, *, device: str, cache_dir: Path, scheduler_class: str, attention: str,
                 compile_mode: str, channels_last: str, vae_slicing_from_batch: int) -> None:
        from runtime.acceleration import Acceleration
        from runtime.engine import WorkerRuntime

        self.runtime = WorkerRuntime(
            device=device, cache_size=1, config_cache_dir=cache_dir,
            acceleration=Acceleration(attention=attention, compile_mode=compile_mode, channels_last=channels_last,
                                      vae_slicing_from_batch=vae_slicing_from_batch),
        )
        self.checkpoint, self.scheduler_class = checkpoint, scheduler_class
        self.pipeline = self.runtime.pipelines.get(str(checkpoint), "bench")  # load (and set up) now

    def __call__(self, *, batch: int, size: int, steps: int, seed: int, clock: "StepClock") -> None:
        from runtime.specs import GenerationSpec

        spec = GenerationSpec(
            checkpoint_path=str(self.checkpoint), checkpoint_sha256="bench", prompts=[PROMPT] * batch,
            negative_prompts=[NEGATIVE_PROMPT] * batch, seeds=[seed + i for i in range(batch)], steps=steps,
            cfg_scale=7.0, width=size, height=size, max_batch=batch, scheduler_class=self.scheduler_class,
        )
        self.runtime.generate(spec, on_step=lambda chunk, step: step and clock.callback(None, step, None, {}))


def attention_processor_name(pipe) -> str:
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    names = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    return "+".join(names)


def generate(pipe, *, batch: int, size: int, steps: int, seed: int, device: str) -> tuple[float, float, float]:
    """One call (a diffusers pipeline or an `AtelierRunner`): (seconds, denoising it/s, peak extra GPU GiB)."""
    import torch

    clock = StepClock(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    _synchronize(device)
    started = time.perf_counter()
    if isinstance(pipe, AtelierRunner):
        pipe(batch=batch, size=size, steps=steps, seed=seed, clock=clock)
    else:
        with torch.inference_mode():
            pipe(
                prompt=[PROMPT] * batch,
                negative_prompt=[NEGATIVE_PROMPT] * batch,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=7.0,
                generator=torch.Generator(device).manual_seed(seed),
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
    workdir = tempfile.TemporaryDirectory(prefix="gpu-bench-")
    folder = Path(workdir.name)
    built = time.perf_counter()
    baseline = build_pipeline(arch_name, device=device, dtype=dtype, seed=args.seed, cache_dir=folder / "configs",
                              scheduler_class=args.scheduler)
    baseline_attention = attention_processor_name(baseline)
    checkpoint = write_checkpoint(baseline, folder / f"random-{arch_name}.safetensors")
    atelier = AtelierRunner(checkpoint, device=device, cache_dir=folder / "cache",
                            scheduler_class=type(baseline.scheduler).__name__, attention=args.attention,
                            compile_mode=args.compile or "", channels_last=args.channels_last,
                            vae_slicing_from_batch=args.vae_slicing_from)
    built = time.perf_counter() - built
    pipes: dict[str, Any] = {"baseline": baseline, "atelier": atelier}
    settings: dict[str, Any] = {
        "path": "WorkerRuntime.generate",
        "checkpoint_bytes": checkpoint.stat().st_size,
        "attention_processor": attention_processor_name(atelier.pipeline),
        "unet_memory_format": "channels_last" if atelier.pipeline.unet.conv_in.weight.is_contiguous(
            memory_format=torch.channels_last) else "contiguous",
        "vae_slicing_from_batch": args.vae_slicing_from,
        **({"compile": args.compile} if args.compile else {}),
    }
    workdir.cleanup()  # the checkpoint is loaded
    results: dict[tuple[str, int], Measurement] = {}
    for batch in batches:
        for name, pipe in pipes.items():
            warm = time.perf_counter()
            for _ in range(args.warmup):
                generate(pipe, batch=batch, size=args.size, steps=args.steps, seed=args.seed, device=device)
            if args.warmup:
                print(f"  warm-up {name} batch {batch}: {time.perf_counter() - warm:.1f} s", flush=True)
            results[(name, batch)] = Measurement(config=name, batch=batch)
        for run in range(args.runs):
            order = list(pipes.items()) if run % 2 == 0 else list(reversed(pipes.items()))
            for name, pipe in order:
                seconds, it_per_s, peak = generate(pipe, batch=batch, size=args.size, steps=args.steps,
                                                   seed=args.seed + run, device=device)
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
    extras = [f"WorkerRuntime, attention {atelier['attention_processor']}", f"{atelier['unet_memory_format']} UNet",
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
    parser.add_argument("--compile", nargs="?", const=COMPILE_MODE, default="", metavar="MODE",
                        help=f"torch.compile the atelier UNet (ATELIER_WORKER_COMPILE; {COMPILE_MODE} if no MODE)")
    parser.add_argument("--attention", default="auto", choices=["auto", "sdpa", "xformers"],
                        help="the atelier worker's ATELIER_WORKER_ATTENTION")
    parser.add_argument("--channels-last", default="off", choices=["on", "off"],
                        help="the atelier worker's ATELIER_WORKER_CHANNELS_LAST")
    parser.add_argument("--vae-slicing-from", type=int, default=VAE_SLICING_FROM_BATCH, metavar="BATCH",
                        help="the atelier worker's ATELIER_VAE_SLICING_FROM_BATCH (0: never)")
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
        args.compile, args.size, args.steps = "", 64, 2
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
