"""ControlNet files: load them, offline, into diffusers' ``ControlNetModel``, and keep them loaded.

:func:`load_controlnet` reads a ControlNet ``.safetensors`` file in the original
lllyasviel/A1111/SGM layout (``control_model.input_blocks...``, ``zero_convs``, ``input_hint_block``,
``middle_block_out``, SDXL's ``label_emb``; with or without the ``control_model.`` prefix) or in
the diffusers layout, for SD 1.x, SD 2.x and SDXL checkpoints. The model config is derived from
the base checkpoint's UNet (``ControlNetModel.from_unet``), so no config is downloaded; for SDXL
the attention layout (transformer depth per block) is read off the weights, as SDXL ControlNets
are often shallower than the UNet. A ControlNet made for another base model is refused naming
both bases (SDXL vs SD 1.x/2.x) or the mismatching keys. :class:`ControlNetCache` keeps loaded
ControlNets (one cache per worker runtime). :func:`controlnet_to_ldm` maps diffusers names back
to the LDM ones (for tests and the tiny ControlNet writer). Pickle files are never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from a1111.controlnet import ControlNetError
from runtime.weight_files import MAX_NAMED, few, require_safetensors

if TYPE_CHECKING:
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

__all__ = ["LDM_CONTROL_PREFIX", "ControlNetCache", "controlnet_to_ldm", "load_controlnet"]

logger = logging.getLogger(__name__)

LDM_CONTROL_PREFIX = "control_model."


def _ldm_names(keys: Iterable[str]) -> dict[str, str]:
    """Each diffusers ``ControlNetModel`` parameter name -> its original LDM name (without prefix)."""
    from runtime.checkpoints.ldm_keys import unet_to_ldm
    from runtime.checkpoints.loading import UNET_PREFIX

    keys = list(keys)
    num_hint_blocks = len({k.split(".")[2] for k in keys if k.startswith("controlnet_cond_embedding.blocks.")})
    layers_per_block = 1 + max(
        (int(m[1]) for k in keys if (m := re.match(r"down_blocks\.\d+\.resnets\.(\d+)\.", k))), default=1
    )
    names: dict[str, str] = {}
    encoder: dict[str, str] = {}
    for key in keys:
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(weight|bias)", key):
            names[key] = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.fullmatch(r"controlnet_mid_block\.(weight|bias)", key):
            names[key] = f"middle_block_out.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(weight|bias)", key):
            names[key] = f"input_hint_block.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(weight|bias)", key):
            names[key] = f"input_hint_block.{2 * int(m[1]) + 2}.{m[2]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(weight|bias)", key):
            names[key] = f"input_hint_block.{2 * num_hint_blocks + 2}.{m[1]}"
        else:
            encoder[key] = key  # the UNet-encoder part: named as in an LDM UNet
    # unet_to_ldm only renames keys, so it maps each name to itself here (values are the old names).
    for ldm_key, key in unet_to_ldm(encoder, layers_per_block=layers_per_block).items():  # type: ignore[arg-type]
        names[key] = ldm_key[len(UNET_PREFIX) :]
    return names


def controlnet_to_ldm(state: Mapping[str, Any], *, prefix: str = LDM_CONTROL_PREFIX) -> dict[str, Any]:
    """A diffusers ``ControlNetModel`` state dict (SD 1.x/2.x/XL) under the original LDM/SGM names.

    The inverse of diffusers' ``convert_controlnet_checkpoint`` (plus SDXL's ``add_embedding`` ->
    ``label_emb.0``): the UNet-encoder part is named as in an LDM UNet, ``controlnet_down_blocks.i`` -> ``zero_convs.i.0``, ``controlnet_mid_block`` ->
    ``middle_block_out.0``, ``controlnet_cond_embedding`` -> ``input_hint_block`` (convs at 0, 2, 4,
    ...). Raises ``ValueError`` for a parameter with no LDM name.
    """
    names = _ldm_names(state)
    return {prefix + names[k]: v for k, v in state.items()}


def _fail(name: str, reason: str) -> ControlNetError:
    return ControlNetError(f"ControlNet {name!r} cannot be used with this checkpoint: {reason}")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as exc:
        raise _fail(path.name, f"it is not a valid safetensors file ({exc})") from None


def _not_a_controlnet(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "it is a Stable Diffusion checkpoint, not a ControlNet"
    if any(k.startswith("lora_controlnet") or k == "lora_controlnet" for k in keys):
        return "it is a Control-LoRA, which is not supported"
    if any(k.startswith(("adapter.", "body.", "conv_in.")) for k in keys) and not any("time_embed" in k for k in keys):
        return "it looks like a T2I-Adapter, which is not supported"
    if any("lora" in k.lower() for k in keys):
        return "it looks like a LoRA, not a ControlNet"
    return "it contains no ControlNet weights (no input_hint_block / controlnet_cond_embedding)"


_BASE_BY_CONTEXT_DIM = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL"}
_XL_EMBEDDING_PREFIXES = ("label_emb.", "add_embedding.")  # SDXL's size/crop/pooled-text MLP, in both layouts
_ATTENTION_KEY = re.compile(
    r"(?:down_blocks\.(?P<block>\d+)\.attentions\.\d+|input_blocks\.(?P<slot>\d+)\.1"
    r"|(?P<mid>mid_block\.attentions\.0|middle_block\.1))\.(?:transformer_blocks\.(?P<layer>\d+)\.)?"
)


def _base_hint(ldm_shapes: Mapping[str, tuple[int, ...]]) -> str:
    to_k = next((s for k, s in ldm_shapes.items() if k.endswith("attn2.to_k.weight") and len(s) == 2), None)
    if to_k is not None and to_k[1] in _BASE_BY_CONTEXT_DIM:
        return f" (the file looks like a ControlNet for {_BASE_BY_CONTEXT_DIM[to_k[1]]})"
    return ""


def _unet_is_xl(unet: UNet2DConditionModel) -> bool:
    return unet.config.get("addition_embed_type") == "text_time"


def _unet_base(unet: UNet2DConditionModel) -> str:
    """The base model family of a UNet, by its conditioning: SDXL, else SD 1.x or SD 2.x."""
    if _unet_is_xl(unet):
        return "SDXL"
    known = _BASE_BY_CONTEXT_DIM.get(int(unet.config.cross_attention_dim))
    if known is not None:
        return known
    return "Stable Diffusion 2.x" if unet.config.use_linear_projection else "Stable Diffusion 1.x"  # small test models


def _file_base(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The base model family a ControlNet file (either layout) was made for, read off its weights.

    SDXL ControlNets carry SDXL's ``label_emb``/``add_embedding``; otherwise the text width of the
    cross-attention names SD 1.x (768) or SD 2.x (1024), and failing that (small test models) the
    projection into attention: SD 1.x uses 1x1 convs, SD 2.x linear layers.
    """
    if any(k.startswith(_XL_EMBEDDING_PREFIXES) for k in shapes):
        return "SDXL"
    to_k = next((s for k, s in shapes.items() if k.endswith("attn2.to_k.weight") and len(s) == 2), None)
    if to_k is not None and to_k[1] in _BASE_BY_CONTEXT_DIM:
        return _BASE_BY_CONTEXT_DIM[to_k[1]]
    proj_in = next((s for k, s in shapes.items() if k.endswith(".proj_in.weight")), None)
    if proj_in is not None:
        return "Stable Diffusion 1.x" if len(proj_in) == 4 else "Stable Diffusion 2.x"
    return "Stable Diffusion 1.x/2.x"


def _attention_depths(keys: Iterable[str], *, layers_per_block: int) -> tuple[dict[int, int], int | None]:
    """The transformer depth of each down block with attention, and of the mid block (None: no attention).

    Works on both layouts (``down_blocks.i.attentions...`` / ``input_blocks.n.1...``). An attention
    without ``transformer_blocks`` (only ``norm``/``proj_in``/``proj_out``) has depth 0, as in
    diffusers' small SDXL ControlNets.
    """
    down: dict[int, int] = {}
    mid: int | None = None
    for key in keys:
        m = _ATTENTION_KEY.match(key)
        if m is None:
            continue
        depth = int(m["layer"]) + 1 if m["layer"] is not None else 0
        if m["mid"] is not None:
            mid = max(mid or 0, depth)
            continue
        block = int(m["block"]) if m["block"] is not None else (int(m["slot"]) - 1) // (layers_per_block + 1)
        down[block] = max(down.get(block, 0), depth)
    return down, mid


def _structure_from_weights(config: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``config`` (a ControlNet config from an SDXL UNet) with the attention layout read off the weights.

    SDXL ControlNets often have fewer transformer layers than the UNet (diffusers' "-mid" and
    "-small" variants): which down blocks have attention, and how deep each is, come from the
    file. ControlNetModel gives the mid block the last entry's depth.
    """
    down, mid = _attention_depths(keys, layers_per_block=int(config["layers_per_block"]))
    count = len(config["block_out_channels"])
    depths = config["transformer_layers_per_block"]
    depths = [int(depths)] * count if isinstance(depths, int) else [int(d) for d in depths]
    types = list(config["down_block_types"])
    for block in range(count):
        if block in down:
            types[block], depths[block] = "CrossAttnDownBlock2D", down[block]
        else:
            types[block] = "DownBlock2D"
    if mid is not None and count - 1 not in down:
        depths[-1] = mid
    return {**config, "down_block_types": types, "transformer_layers_per_block": depths}


def _unet_fingerprint(unet: UNet2DConditionModel) -> str:
    config = json.dumps(dict(unet.config), sort_keys=True, default=str)
    return hashlib.sha256(config.encode()).hexdigest()[:16]


def _empty_controlnet(like_unet: UNet2DConditionModel, keys: Iterable[str]) -> ControlNetModel:
    """A ControlNetModel on the meta device shaped for ``like_unet`` (and, for SDXL, the file's attention layout)."""
    import torch
    from diffusers import ControlNetModel

    with torch.device("meta"):  # shapes only: no random init of weights that are replaced
        model = ControlNetModel.from_unet(like_unet, load_weights_from_unet=False)
        config = dict(model.config)
        # An inpainting UNet takes 9 channels, but its ControlNet sees only the 4-channel latents.
        config["in_channels"] = like_unet.config.out_channels
        if _unet_is_xl(like_unet):
            config = _structure_from_weights(config, keys)
        if config != dict(model.config):
            model = ControlNetModel.from_config(config)
    return model


def load_controlnet(
    path: Path,
    *,
    like_unet: UNet2DConditionModel,
    dtype: torch.dtype,
    device: str | torch.device,
) -> ControlNetModel:
    """A ``ControlNetModel`` for ``like_unet``'s architecture with the weights in ``path``, offline.

    ``path`` is a ``.safetensors`` file in the original LDM/SGM layout (keys under ``control_model.``,
    or bare ``input_blocks...``/``zero_convs...``/``input_hint_block...``/``middle_block_out...``)
    or in the diffusers layout (e.g. a renamed ``diffusion_pytorch_model.safetensors``), for SD 1.x,
    SD 2.x or SDXL. The config comes from ``like_unet`` (``ControlNetModel.from_unet``); for SDXL the
    down blocks' attention and transformer depths are read off the weights, since SDXL ControlNets
    may be shallower than the UNet. The result has ``dtype``, is on ``device`` and in eval mode.
    ``like_unet`` is not modified.

    Raises :class:`ControlNetError` for other file types (pickles are never loaded), unreadable
    files, files without ControlNet weights, ControlNets for another base model (SDXL vs SD 1.x/2.x,
    naming both) and for another architecture (naming a few mismatching keys); ``FileNotFoundError``
    for a missing path.
    """
    from diffusers.loaders.single_file_utils import (
        DIFFUSERS_TO_LDM_MAPPING,
        convert_controlnet_checkpoint,
    )

    path = Path(path)
    require_safetensors(path, "ControlNet", ControlNetError)
    state = _read_tensors(path)

    diffusers_layout = any(k.startswith(("controlnet_cond_embedding.", "controlnet_down_blocks.")) for k in state)
    if not diffusers_layout:
        if any(k.startswith(LDM_CONTROL_PREFIX) for k in state):
            state = {k[len(LDM_CONTROL_PREFIX) :]: v for k, v in state.items() if k.startswith(LDM_CONTROL_PREFIX)}
        if not any(k.startswith(("input_hint_block.", "zero_convs.")) for k in state):
            raise _fail(path.name, _not_a_controlnet(state))
    file_shapes = {k: tuple(v.shape) for k, v in state.items()}
    file_base, checkpoint_base = _file_base(file_shapes), _unet_base(like_unet)
    if (file_base == "SDXL") != (checkpoint_base == "SDXL"):
        raise _fail(
            path.name,
            f"it is a ControlNet for {file_base}, but this checkpoint is {checkpoint_base}: "
            f"use a ControlNet made for {checkpoint_base}",
        )

    model = _empty_controlnet(like_unet, state)
    model_state = model.state_dict()
    try:  # diffusers name -> LDM name, for this architecture
        ldm_names: dict[str, str] | None = _ldm_names(model_state)
    except ValueError:  # a layout without LDM names: keys are then checked after conversion only
        ldm_names = None

    if diffusers_layout:
        converted = state
    else:
        if ldm_names is not None:
            expected = set(ldm_names.values())
            unknown, missing = state.keys() - expected, expected - state.keys()
            if unknown or missing:
                parts = [f"{len(missing)} weights missing ({few(missing)})"] if missing else []
                parts += [f"{len(unknown)} unknown weights ({few(unknown)})"] if unknown else []
                raise _fail(path.name, "different structure: " + "; ".join(parts) + _base_hint(file_shapes))
        converted = convert_controlnet_checkpoint(state, dict(model.config))
        converted = {k: v for k, v in converted.items() if v is not None}
        if model.config.addition_embed_type is not None:  # SDXL's label_emb, which diffusers' converter skips
            for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
                if old in state:
                    converted[new] = state[old]

    names = ldm_names if converted is not state else None
    missing = model_state.keys() - converted.keys()
    unknown = converted.keys() - model_state.keys()
    if missing or unknown:
        parts = [f"{len(missing)} weights missing ({few(missing)})"] if missing else []
        parts += [f"{len(unknown)} unknown weights ({few(unknown)})"] if unknown else []
        raise _fail(path.name, "different structure: " + "; ".join(parts))
    wrong = {k: (tuple(converted[k].shape), tuple(model_state[k].shape)) for k in model_state if converted[k].shape != model_state[k].shape}
    if wrong:
        named = sorted(((names or {}).get(k, k), theirs, ours) for k, (theirs, ours) in wrong.items())
        shown = "; ".join(f"{k} is {list(t)} in the file but {list(o)} here" for k, t, o in named[:MAX_NAMED])
        more = f" (and {len(wrong) - MAX_NAMED} more)" if len(wrong) > MAX_NAMED else ""
        ldm_shapes = {(names or {}).get(k, k): tuple(v.shape) for k, v in converted.items()}
        raise _fail(path.name, f"it is for another architecture: {len(wrong)} weights have other shapes: {shown}{more}{_base_hint(ldm_shapes)}")

    tensors = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in converted.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:  # not expected after the checks above; still a mismatch, not a crash
        raise _fail(path.name, str(exc).splitlines()[0]) from None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise _fail(path.name, "some weights of the ControlNet were not filled")
    return model.eval()


class ControlNetCache:
    """Loaded ControlNets, least recently used first out; one per worker runtime.

    Keyed by the file's sha256 and the base UNet's architecture (the same file is converted once per
    architecture it is used with). Failed loads are not cached.
    """

    def __init__(self, *, capacity: int = 4, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
        import torch

        self.capacity = max(1, capacity)
        self.device = device
        self.dtype = dtype if dtype is not None else torch.float32
        self._models: OrderedDict[tuple[str, str], ControlNetModel] = OrderedDict()
        self.loads = 0

    def get(self, path: str, sha256: str, *, like_unet: UNet2DConditionModel) -> ControlNetModel:
        """The ControlNet in ``path`` (content hash ``sha256``) for ``like_unet``'s architecture."""
        key = (sha256, _unet_fingerprint(like_unet))
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model
        started = time.perf_counter()
        model = load_controlnet(Path(path), like_unet=like_unet, dtype=self.dtype, device=self.device)
        self.loads += 1
        logger.info("loaded ControlNet %s in %.2fs", path, time.perf_counter() - started)
        self._models[key] = model
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)
        return model

    def loaded(self) -> list[str]:
        """The sha256 of each loaded ControlNet, least recently used first."""
        return [sha for sha, _ in self._models]
