"""Prompt expansion throughput on one worker: Atelier's batched sampler beside a bare `generate` call.

Builds the tiny random-weight prompt-generation model (`runtime/tiny/promptgen.py`, GPT-2 or
BLOOM) into a temporary folder and measures, for each batch size (default 1 and 8):

  * atelier:  the worker's own object: `WorkerRuntime(...).promptgen.expand(spec)` with `batch`
              expansions in one `PromptgenSpec` (what one promptgen batch of `batch` members' jobs
              runs): each expansion `--results` rows, left-padded together, sampled per row with
              its own settings and seed (one torch.Generator per row), the step callback a
              worker passes, and decoding;
  * baseline: transformers' own `model.generate(do_sample=True, num_return_sequences=results)`
              on the same loaded model and tokenizer, with the `batch` prompts left-padded in
              one call (one setting and one global seed for the whole call: what generate can
              do), then `batch_decode`.

An expansion is one request (one job) of `--results` prompts of at most `--max-length` new
tokens. The random model may end a row early at its end-of-text token, in either implementation,
so tokens per second (new tokens actually generated) is printed beside expansions per second.
Medians over `--runs` runs after `--warmup`, the two alternating run by run.

Usage (from the repository root):

    .venv/bin/python bench/promptgen.py [--family bloom|gpt2] [--batches 1,8] [--results 4]
                                        [--max-length 64] [--runs 5] [--warmup 1] [--device auto]

It ends with one JSON line (the figures, for bench/results).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPTS = ("a cat", "a castle on a hill", "a futuristic city at night", "a portrait of a woman",
           "a cute dog in a garden", "a mountain lake", "a red bicycle", "a lighthouse at dawn")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("bloom", "gpt2"), default="bloom")
    parser.add_argument("--batches", default="1,8", help="expansions per batch, comma-separated")
    parser.add_argument("--results", type=int, default=4, help="prompts per expansion (num_results)")
    parser.add_argument("--max-length", type=int, default=64, help="new tokens per prompt")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from transformers.utils import logging as transformers_logging

    from a1111.promptgen import model_input
    from runtime.engine import WorkerRuntime
    from runtime.specs import ExpansionRequest, PromptgenSpec
    from runtime.tiny.promptgen import write_tiny_promptgen

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    batches = [int(value) for value in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="atelier-bench-promptgen-") as scratch:
        folder = write_tiny_promptgen(Path(scratch) / f"tiny-{args.family}", args.family)
        runtime = WorkerRuntime(device=args.device, cache_size=1, config_cache_dir=Path(scratch) / "cache")
        device = runtime.device
        loaded = runtime.promptgen.model(str(folder), "bench")
        model, tokenizer = loaded.model, loaded.tokenizer

        def inputs(batch: int) -> list[str]:
            return [model_input(PROMPTS[i % len(PROMPTS)], args.family) for i in range(batch)]

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        def run_atelier(batch: int, run: int) -> int:
            spec = PromptgenSpec(
                model_path=str(folder), model_sha256="bench",
                requests=tuple(
                    ExpansionRequest(prompt=text, num_results=args.results, max_new_tokens=args.max_length,
                                     temperature=1.0, top_k=12, top_p=1.0, seed=1000 * run + i)
                    for i, text in enumerate(inputs(batch))
                ),
            )
            texts = runtime.promptgen.expand(spec, on_step=lambda step: ())
            sync()
            return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for group in texts for text in group)

        @torch.inference_mode()
        def run_baseline(batch: int, run: int) -> int:
            torch.manual_seed(run)
            encoded = tokenizer(inputs(batch), return_tensors="pt", padding=True).to(device)
            output = model.generate(
                **encoded, do_sample=True, temperature=1.0, top_k=12, top_p=1.0, max_new_tokens=args.max_length,
                num_return_sequences=args.results, pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
            sync()
            return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)

        rows: list[dict[str, Any]] = []
        for batch in batches:
            timings: dict[str, list[tuple[float, int]]] = {"atelier": [], "baseline": []}
            for run in range(args.warmup + args.runs):
                for name, call in (("atelier", run_atelier), ("baseline", run_baseline)):
                    started = time.perf_counter()
                    tokens = call(batch, run)
                    elapsed = time.perf_counter() - started
                    if run >= args.warmup:
                        timings[name].append((elapsed, tokens))
            row: dict[str, Any] = {"batch": batch}
            for name, measured in timings.items():
                seconds = statistics.median(elapsed for elapsed, _ in measured)
                tokens = statistics.median(count for _, count in measured)
                row[name] = {
                    "seconds": round(seconds, 4),
                    "expansions_per_s": round(batch / seconds, 2),
                    "prompts_per_s": round(batch * args.results / seconds, 2),
                    "tokens_per_s": round(tokens / seconds, 1),
                }
            row["speed_vs_baseline"] = round(row["atelier"]["seconds"] and row["baseline"]["seconds"] / row["atelier"]["seconds"], 2)
            rows.append(row)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"prompt expansion, tiny {args.family}, {args.results} prompts x {args.max_length} new tokens per expansion, "
          f"{device} ({device_name}), torch {torch.__version__}; medians of {args.runs} runs")
    print(f"{'batch':>5}  {'atelier exp/s':>13}  {'tok/s':>8}  {'baseline exp/s':>14}  {'tok/s':>8}  {'atelier/baseline':>16}")
    for row in rows:
        print(f"{row['batch']:>5}  {row['atelier']['expansions_per_s']:>13}  {row['atelier']['tokens_per_s']:>8}  "
              f"{row['baseline']['expansions_per_s']:>14}  {row['baseline']['tokens_per_s']:>8}  {row['speed_vs_baseline']:>16}")
    print(json.dumps({
        "bench": "promptgen", "family": args.family, "device": str(device), "device_name": device_name,
        "results_per_expansion": args.results, "max_new_tokens": args.max_length, "runs": args.runs, "rows": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
