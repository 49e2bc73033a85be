"""The keys the scheduler matches jobs and workers on, defined once (pure: no Django, no torch).

`inference/services.py` stamps them on every `Job` row, the worker reports the network key of the
job it last ran (copied from that Job row, never recomputed), and `bench/scheduler_sim.py` builds
its simulated jobs with the same functions, so the simulator and production cannot drift apart.

* `model_key`: what must be in a worker's device memory before a batch can start, i.e. the
  checkpoint's sha256 and nothing else. The VAE is left out on purpose: a VAE is a ~160 MB
  module swapped in a fraction of a second (`VaeCache` keeps recent ones), while a checkpoint
  load takes seconds; keying placement on the pair would split one warm checkpoint into one
  "model" per VAE, send jobs that differ only by VAE to cold workers and make the scheduler
  load the same UNet twice. The VAE is still part of the *batch* key (jobs of one pipeline call
  must share it).
  A job with an SDXL refiner, or a hires-fix pass on a checkpoint of its own (`hr_checkpoint_name`),
  needs both checkpoints: its key is the pair (`model_key`'s second argument), which a worker
  reports while it holds both (`inference/runner/batch.py` `held_models`).
* `network_key`: the set of extra networks a batch applies (LoRAs in any order with their
  weights, hypernetworks in order, embeddings), hashed when long so it always fits its column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from inference.hashing import bounded_key
from a1111.prompts import ExtraNetwork, lora_key

# Job.network_key and Worker.active_networks are 500-character columns; seven LoRA tags already
# make a longer key, so anything over this length becomes a digest.
NETWORK_KEY_LENGTH = 200


def model_key(checkpoint_sha256: str, refiner_sha256: str = "") -> str:
    """The model a worker must hold for a job: its checkpoint's sha256 ("" for none, e.g. extras);
    with a refiner (or a hires checkpoint), the pair "<checkpoint>+<refiner>" (a worker holding both reports that key too,
    so such jobs batch and stay warm only with jobs of the same pair)."""
    return f"{checkpoint_sha256}+{refiner_sha256}" if refiner_sha256 else checkpoint_sha256


PROMPTGEN_KEY_PREFIX = "promptgen:"


def promptgen_model_key(weights_sha256: str) -> str:
    """The model a worker must hold for a prompt expansion: its language model, by the weights' sha256
    (prefixed, so it never equals a checkpoint's key)."""
    return PROMPTGEN_KEY_PREFIX + weights_sha256


def promptgen_batch_key(weights_sha256: str) -> str:
    """Expansions on one language model share a batch whatever their settings (the runtime samples
    each row with its own); it fits `Job.batch_key`'s 64 characters."""
    return PROMPTGEN_KEY_PREFIX + weights_sha256[:48]


def network_key(networks: Iterable[Mapping[str, Any]]) -> str:
    """What a batch's extra networks must agree on: the LoRA set (any order) and the
    hypernetworks in order (A1111 applies them in sequence), and the embeddings.

    `networks` are resolved entries (`kind`, `name`, `sha256`, `te_weight`, `unet_weight`), as
    `GenerationRequest.networks` holds them after `job_submit` resolved them.
    """
    networks = list(networks)
    loras = [
        ExtraNetwork(kind="lora", name=n["sha256"], te_weight=n["te_weight"], unet_weight=n["unet_weight"])
        for n in networks if n["kind"] == "lora"
    ]
    hypernets = ";".join(f"{n['sha256']}@{n['unet_weight']:.6g}" for n in networks if n["kind"] == "hypernet")
    embeddings = ";".join(sorted(f"{n['name']}@{n['sha256']}" for n in networks if n["kind"] == "embedding"))
    key = (
        lora_key(loras)
        + (f"|hypernet={hypernets}" if hypernets else "")
        + (f"|embedding={embeddings}" if embeddings else "")
    )
    return bounded_key(key, NETWORK_KEY_LENGTH)
