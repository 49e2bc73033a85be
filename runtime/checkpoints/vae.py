"""Load a standalone VAE file (A1111's ``models/VAE/*.safetensors``) to swap into a loaded pipeline.

:func:`load_vae_file` reads a ``.safetensors`` file and builds a new ``AutoencoderKL`` with the same
config, dtype and device as the pipeline's own VAE (``like``), fully offline. Three key layouts are
accepted:

* bare LDM keys (``encoder.down.0.block.0.conv1.weight``, ...), as A1111's VAE files have; the
  training leftovers ``loss.*`` and ``model_ema.*`` are ignored;
* LDM keys under ``first_stage_model.`` (a full checkpoint used as a VAE; only its VAE is read);
* diffusers keys (``encoder.down_blocks.0.resnets.0.conv1.weight``, ...), including the old
  attention names (``query``/``key``/``value``/``proj_attn``) of diffusers < 0.14.

LDM keys are converted with diffusers' ``convert_ldm_vae_checkpoint``. That converter silently drops
keys it has no name for, so the file's keys are first compared with the LDM names the target
architecture has; every mismatch (foreign keys, missing keys, other shapes) is reported as
:class:`VaeMismatch` before any weights are loaded.

Pickle files (``.ckpt``, ``.pt``, ...) are never loaded: unpickling can run arbitrary code.

A VAE of the same architecture but trained for another latent space (an SDXL VAE in an SD1.x
pipeline) has identical shapes and cannot be told apart here; it loads and gives off colours.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from runtime.checkpoints.loading import VAE_PREFIX
from runtime.weight_files import MAX_NAMED, few, require_safetensors

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

__all__ = ["VaeMismatch", "load_vae_file"]

_IGNORED_PREFIXES = ("loss.", "model_ema.")
_DIFFUSERS_MARKERS = (".down_blocks.", ".up_blocks.", ".mid_block.")
# diffusers < 0.14 named the VAE's attention projections differently; from_pretrained renames them too.
_OLD_ATTENTION_NAMES = (
    (".query.", ".to_q."),
    (".key.", ".to_k."),
    (".value.", ".to_v."),
    (".proj_attn.", ".to_out.0."),
)


class VaeMismatch(ValueError):
    """The file cannot be used as this pipeline's VAE. The message is safe to show to users."""


def _fail(name: str, reason: str) -> VaeMismatch:
    return VaeMismatch(f"VAE {name!r} does not fit this checkpoint: {reason}")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The VAE tensors of a safetensors file, bare keys (prefix and training leftovers dropped)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            if any(k.startswith(VAE_PREFIX) for k in keys):
                wanted = {k: k[len(VAE_PREFIX) :] for k in keys if k.startswith(VAE_PREFIX)}
            else:
                wanted = {k: k for k in keys if not k.startswith(_IGNORED_PREFIXES)}
            return {new: f.get_tensor(old) for old, new in wanted.items()}
    except SafetensorError as exc:
        raise _fail(path.name, f"it is not a valid safetensors file ({exc})") from None


def _expected_ldm_keys(like: AutoencoderKL) -> set[str] | None:
    """The LDM names of ``like``'s parameters, or None where that layout has no LDM equivalent."""
    from runtime.checkpoints.ldm_keys import vae_to_ldm

    try:
        ldm = vae_to_ldm(like.state_dict(), num_blocks=len(like.config.block_out_channels))
    except ValueError:
        return None
    return {k[len(VAE_PREFIX) :] for k in ldm}


def _rename_old_attention(key: str) -> str:
    if ".attentions." in key:
        for old, new in _OLD_ATTENTION_NAMES:
            key = key.replace(old, new)
    return key


def _latent_hint(state: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor]) -> str:
    """A hint when the file's latent space has another channel count (SD3/Flux VAEs have 16)."""
    key = "post_quant_conv.weight" if "post_quant_conv.weight" in model else "decoder.conv_in.weight"
    if key in state and key in model and state[key].ndim == 4 and model[key].ndim == 4:
        theirs, ours = state[key].shape[1], model[key].shape[1]
        if theirs != ours:
            family = " (an SD3 or Flux VAE?)" if theirs == 16 else ""
            return f"; the file's VAE has {theirs} latent channels{family}, the checkpoint's {ours}"
    return ""


def _check(name: str, state: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`VaeMismatch` unless ``state`` has exactly ``model``'s keys and shapes."""
    missing = model.keys() - state.keys()
    unexpected = state.keys() - model.keys()
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing ({few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown weights ({few(unexpected)})")
        raise _fail(name, "different structure: " + "; ".join(parts))
    wrong = {
        k: (tuple(state[k].shape), tuple(model[k].shape))
        for k in model
        if state[k].shape != model[k].shape
    }
    if wrong:
        shown = "; ".join(
            f"{k} is {list(theirs)} in the file but {list(ours)} in the checkpoint"
            for k, (theirs, ours) in sorted(wrong.items())[:MAX_NAMED]
        )
        more = f" (and {len(wrong) - MAX_NAMED} more)" if len(wrong) > MAX_NAMED else ""
        raise _fail(name, f"{len(wrong)} weights have other shapes: {shown}{more}{_latent_hint(state, model)}")


def load_vae_file(path: Path, *, like: AutoencoderKL) -> AutoencoderKL:
    """A new ``AutoencoderKL`` with ``like``'s config, dtype and device and the weights in ``path``.

    ``path`` must be a ``.safetensors`` file in LDM layout (bare or under ``first_stage_model.``) or
    diffusers layout. The result is in eval mode; ``like`` is not modified. Nothing is downloaded.

    Raises :class:`VaeMismatch` (a ``ValueError``) for other file types, unreadable files and VAEs
    whose weights do not fit ``like``'s architecture, and ``FileNotFoundError`` for a missing path.
    """
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path = Path(path)
    require_safetensors(path, "VAE", VaeMismatch)

    state = _read_tensors(path)
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        raise _fail(path.name, "it contains no VAE encoder/decoder weights (is it a VAE at all?)")

    model_state = like.state_dict()
    if any(marker in k for k in state for marker in _DIFFUSERS_MARKERS):
        state = {_rename_old_attention(k): v for k, v in state.items()}
    else:
        # The converter drops every key it has no name for, so foreign keys are caught here.
        expected = _expected_ldm_keys(like)
        if expected is not None and (unknown := state.keys() - expected):
            raise _fail(path.name, f"different structure: {len(unknown)} unknown weights ({few(unknown)})")
        state = convert_ldm_vae_checkpoint(state, dict(like.config))
    _check(path.name, state, model_state)

    # Each tensor gets the dtype and device of ``like``'s (casting the module with ``.to(dtype)``
    # instead makes diffusers 0.42 log a warning about fp32 modules on every load).
    state = {
        k: v.to(device=model_state[k].device, dtype=model_state[k].dtype).contiguous() for k, v in state.items()
    }
    # Built on the meta device and filled by assignment: no random init of weights that are replaced.
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(like.config)
    try:
        vae.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # not expected after _check; still a mismatch, not a crash
        raise _fail(path.name, str(exc).splitlines()[0]) from None
    if any(t.is_meta for t in (*vae.parameters(), *vae.buffers())):
        raise _fail(path.name, "some weights of the VAE were not filled")
    return vae.eval()
