"""Load AUTOMATIC1111 hypernetworks and apply them to a diffusers UNet for the duration of a batch.

A hypernetwork (A1111 ``models/hypernetworks/*.pt``) holds, for each context width it was trained
on (768 for SD1.x, 1024 for SD2.x, and often 320/640/1280 as well), a pair of small residual MLPs:
one for the keys and one for the values of attention. Before ``to_k`` / ``to_v``, the context goes
through them: ``context_k = context + mlp_k(context) * strength`` (likewise for v). Several
hypernetworks stack: each transforms the previous one's output, in order.

This module follows ``modules/hypernetworks/hypernetwork.py`` of A1111 1.10 (layer order, the
``dropout_structure`` derivation that fixes the Sequential indices in the state dict, the defaults
of missing metadata, the old ``linear1``/``linear2`` key names, ``"swish"`` meaning Hardswish),
with these differences:

- ``.pt`` files are unpickled only with ``torch.load(weights_only=True)``: tensors and plain data
  load, anything that would run code is refused with :class:`HypernetworkError`;
- ``.safetensors`` files are read too: tensors named ``<width>.<0 for k, 1 for v>.<parameter>``
  (``768.0.linear.0.weight``) and the metadata under the ``.pt`` names in the header, each value a
  string (JSON or a Python literal: ``"[1, 2, 1]"``, ``"relu"``, ``"true"``);
- a hypernetwork without a module for the model's cross-attention width is refused (A1111 silently
  skips it, which gives the plain image, or worse, only its self-attention part);
- the strength is an argument of :func:`applied`, never state stored on the modules.

As in A1111 (and ComfyUI), every attention whose context width the file has a module for is
transformed: the cross-attention (``attn2``, context = the text encoder output) and also the
self-attention (``attn1``, context = the image features) of blocks whose width the file covers,
because most published hypernetworks carry 320/640/1280 modules and A1111 applies them there.

:func:`applied` swaps in a wrapping attention processor (the wrapped one, SDPA by default, still
computes the attention) and restores the original processors on exit, exceptions included. It
mutates the UNet it is given, so a UNet must not run two batches at once while one is inside it.
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

__all__ = [
    "ACTIVATIONS",
    "Hypernetwork",
    "HypernetworkAttnProcessor",
    "HypernetworkError",
    "HypernetworkModule",
    "applied",
    "dropout_structure_for",
    "load_hypernetwork",
]

PT_SUFFIX = ".pt"
SAFETENSORS_SUFFIX = ".safetensors"
DEFAULT_LAYER_STRUCTURE: tuple[float, ...] = (1.0, 2.0, 1.0)
A1111_DROPOUT_P = 0.3
_SAFETENSORS_KEY = re.compile(r"(\d+)\.([01])\.(.+)")
# Sequential indices of pre-2022-10 files (two plain linears, no activation).
_OLD_KEY_NAMES = MappingProxyType(
    {
        "linear1.weight": "linear.0.weight",
        "linear1.bias": "linear.0.bias",
        "linear2.weight": "linear.1.weight",
        "linear2.bias": "linear.1.bias",
    }
)


def _activation_classes() -> Mapping[str, type[nn.Module]]:
    # A1111's activation_dict: its seven names, then every class of torch.nn.modules.activation
    # under its lower-case name. "swish" is Hardswish there, and files trained with it expect that.
    classes: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "leakyrelu": nn.LeakyReLU,
        "elu": nn.ELU,
        "swish": nn.Hardswish,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    for name, cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass):
        if cls.__module__ == "torch.nn.modules.activation" and issubclass(cls, nn.Module):
            classes[name.lower()] = cls
    return MappingProxyType(classes)


ACTIVATIONS: Mapping[str, type[nn.Module]] = _activation_classes()
"""Activation names a hypernetwork file may use (besides ``"linear"`` / none: no activation)."""


class HypernetworkError(ValueError):
    """A hypernetwork file cannot be loaded or cannot be used with this model; the message says why."""


def dropout_structure_for(
    layer_structure: Sequence[float], *, use_dropout: bool, last_layer_dropout: bool
) -> tuple[float, ...]:
    """A1111's ``parse_dropout_structure``: the dropout after each layer of files that do not store one.

    The Dropout modules matter even though they do nothing at inference: they take Sequential
    indices, so they decide the names of the following layers' weights in the file.
    """
    if not use_dropout:
        return (0.0,) * len(layer_structure)
    inner = [A1111_DROPOUT_P] * (len(layer_structure) - 3)
    return (0.0, *inner, A1111_DROPOUT_P if last_layer_dropout else 0.0, 0.0)


class HypernetworkModule(nn.Module):
    """One residual MLP of a hypernetwork (for k or for v at one width), A1111's module layout.

    ``self.linear`` is the ``torch.nn.Sequential`` whose state dict the file stores: for each layer
    a Linear, then the activation (not after the last layer unless ``activate_output``), then a
    LayerNorm if ``add_layer_norm``, then a Dropout where ``dropout_structure`` says so.
    """

    def __init__(
        self,
        width: int,
        *,
        layer_structure: Sequence[float],
        activation_func: str | None,
        add_layer_norm: bool,
        activate_output: bool,
        dropout_structure: Sequence[float],
    ) -> None:
        super().__init__()
        self.width = width
        layers: list[nn.Module] = []
        last = len(layer_structure) - 2
        for i in range(len(layer_structure) - 1):
            size_out = int(width * layer_structure[i + 1])
            layers.append(nn.Linear(int(width * layer_structure[i]), size_out))
            if activation_func not in (None, "linear") and (i < last or activate_output):
                layers.append(_make_activation(activation_func))
            if add_layer_norm:
                layers.append(nn.LayerNorm(size_out))
            if dropout_structure[i + 1] > 0:
                layers.append(nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = nn.Sequential(*layers)
        self.eval()
        self.requires_grad_(False)

    def forward(self, context: torch.Tensor, strength: float) -> torch.Tensor:
        """``context + mlp(context) * strength``, computed in the module's dtype, returned in the context's."""
        parameter = next(self.parameters())
        hidden = context.to(device=parameter.device, dtype=parameter.dtype)
        return (hidden + self.linear(hidden) * strength).to(context.dtype)


def _make_activation(name: str) -> nn.Module:
    cls = ACTIVATIONS.get(name)
    if cls is None:
        raise HypernetworkError(f"unsupported activation function {name!r}")
    try:
        return cls()
    except TypeError as exc:  # e.g. Threshold or MultiheadAttention need arguments
        raise HypernetworkError(f"unsupported activation function {name!r}") from exc


@dataclass(frozen=True, eq=False)
class Hypernetwork:
    """A loaded hypernetwork: its k/v module pair per context width, and the file's metadata.

    Immutable once loaded and safe to share between batches and threads (its modules are in eval
    mode, without gradients, and never modified); :meth:`to` returns a copy on another device.
    """

    name: str
    layer_structure: tuple[float, ...]
    activation_func: str | None
    add_layer_norm: bool
    activate_output: bool
    use_dropout: bool
    dropout_structure: tuple[float, ...]
    weight_initialization: str | None
    step: int | None
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    modules: Mapping[int, tuple[HypernetworkModule, HypernetworkModule]] = field(repr=False)

    @property
    def widths(self) -> tuple[int, ...]:
        """The context widths this hypernetwork has modules for, ascending."""
        return tuple(sorted(self.modules))

    @property
    def device(self) -> torch.device:
        first_k, _ = next(iter(self.modules.values()))
        return next(first_k.parameters()).device

    def to(self, device: torch.device | str) -> Hypernetwork:
        """This hypernetwork on ``device``: itself if already there, else a copy (float32 kept)."""
        device = torch.device(device)
        if _same_device(self.device, device):
            return self
        moved = {
            width: (copy.deepcopy(k).to(device), copy.deepcopy(v).to(device)) for width, (k, v) in self.modules.items()
        }
        return _replace_modules(self, moved)


def _replace_modules(
    hypernet: Hypernetwork, modules: dict[int, tuple[HypernetworkModule, HypernetworkModule]]
) -> Hypernetwork:
    fields = {name: getattr(hypernet, name) for name in hypernet.__dataclass_fields__}
    fields["modules"] = MappingProxyType(modules)
    return Hypernetwork(**fields)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":  # "cuda" means the current device
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index or a.index is None or b.index is None


# --------------------------------------------------------------------------- loading


def load_hypernetwork(path: Path, *, device: torch.device | str = "cpu") -> Hypernetwork:
    """Read an A1111 hypernetwork (``.pt`` or ``.safetensors``) onto ``device`` (float32).

    ``.pt`` files are unpickled with ``weights_only=True`` only. Raises :class:`HypernetworkError`
    for any other suffix, a file that is not a readable hypernetwork, code hidden in a pickle,
    unsupported metadata, or weights that do not fit the declared layer structure.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == PT_SUFFIX:
        raw = _read_pt(path)
    elif suffix == SAFETENSORS_SUFFIX:
        raw = _read_safetensors(path)
    else:
        raise HypernetworkError(
            f"{path.name}: not a hypernetwork file (expected {PT_SUFFIX} or {SAFETENSORS_SUFFIX})"
        )
    metadata, weights = raw
    return _build(path, metadata, weights, torch.device(device))


_Weights = dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]


def _read_pt(path: Path) -> tuple[dict[str, Any], _Weights]:
    if not path.is_file():
        raise HypernetworkError(f"{path.name}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for forbidden globals, RuntimeError/EOFError for junk
        raise HypernetworkError(
            f"{path.name}: cannot be read as a hypernetwork; only tensors and plain data are loaded "
            f"from .pt files, never code ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if not isinstance(data, Mapping):
        raise HypernetworkError(f"{path.name}: not a hypernetwork (the file holds a {type(data).__name__})")
    metadata: dict[str, Any] = {}
    weights: _Weights = {}
    for key, value in data.items():
        if isinstance(key, int) and not isinstance(key, bool):
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise HypernetworkError(f"{path.name}: width {key} must hold a (k, v) pair of state dicts")
            weights[key] = (_tensor_dict(path, key, value[0]), _tensor_dict(path, key, value[1]))
        elif isinstance(key, str):
            metadata[key] = value
    return metadata, weights


def _tensor_dict(path: Path, width: int, value: object) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in value.items()
    ):
        raise HypernetworkError(f"{path.name}: the weights for width {width} are not a state dict of tensors")
    return dict(value)


def _read_safetensors(path: Path) -> tuple[dict[str, Any], _Weights]:
    from safetensors import safe_open

    if not path.is_file():
        raise HypernetworkError(f"{path.name}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # SafetensorError and friends: a truncated or foreign file
        raise HypernetworkError(f"{path.name}: not a readable safetensors file ({_first_line(exc)})") from exc
    metadata = {key: _parse_metadata_value(value) for key, value in header.items()}
    pairs: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
    for key, tensor in tensors.items():
        match = _SAFETENSORS_KEY.fullmatch(key)
        if match is None:
            raise HypernetworkError(
                f"{path.name}: unexpected tensor {key!r} "
                "(expected <width>.<0|1>.<parameter>, e.g. 768.0.linear.0.weight)"
            )
        width, which, parameter = int(match[1]), int(match[2]), match[3]
        pair = pairs.setdefault(width, ({}, {}))
        pair[which][parameter] = tensor
    return metadata, pairs


def _parse_metadata_value(text: str) -> Any:
    """A safetensors header value: JSON, else a Python literal, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _build(path: Path, metadata: Mapping[str, Any], weights: _Weights, device: torch.device) -> Hypernetwork:
    name = path.name
    if not weights:
        raise HypernetworkError(f"{name}: the file holds no hypernetwork weights")
    layer_structure = _layer_structure(name, metadata.get("layer_structure"))
    activation = _optional_str(name, "activation_func", metadata.get("activation_func"))
    if activation is not None:
        activation = activation.lower()
        if activation not in ("linear", "none"):
            _make_activation(activation)  # refuse an unknown one before building anything
        elif activation == "none":
            activation = None
    add_layer_norm = _flag(name, "is_layer_norm", metadata.get("is_layer_norm"), default=False)
    activate_output = _flag(name, "activate_output", metadata.get("activate_output"), default=True)
    last_layer_dropout = _flag(name, "last_layer_dropout", metadata.get("last_layer_dropout"), default=False)
    stored_dropout = metadata.get("dropout_structure")
    if stored_dropout is not None:
        dropout = _dropout_structure(name, stored_dropout, len(layer_structure))
        use_dropout = any(dropout) or _flag(name, "use_dropout", metadata.get("use_dropout"), default=False)
    else:
        use_dropout = _flag(name, "use_dropout", metadata.get("use_dropout"), default=False)
        dropout = dropout_structure_for(layer_structure, use_dropout=use_dropout, last_layer_dropout=last_layer_dropout)

    modules: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
    for width, pair in sorted(weights.items()):
        if width <= 0:
            raise HypernetworkError(f"{name}: invalid context width {width}")
        built = []
        for which, state in zip(("k", "v"), pair, strict=True):
            module = HypernetworkModule(
                width,
                layer_structure=layer_structure,
                activation_func=activation,
                add_layer_norm=add_layer_norm,
                activate_output=activate_output,
                dropout_structure=dropout,
            )
            state = {_OLD_KEY_NAMES.get(key, key): tensor for key, tensor in state.items()}
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise HypernetworkError(
                    f"{name}: the {which} weights for width {width} do not fit layer structure "
                    f"{list(layer_structure)} (activation {activation}, layer norm {add_layer_norm}, "
                    f"dropout {list(dropout)}): {_first_line(exc)}"
                ) from exc
            if not all(torch.isfinite(p).all() for p in module.parameters()):
                raise HypernetworkError(f"{name}: the {which} weights for width {width} contain NaN or infinity")
            built.append(module.to(device=device, dtype=torch.float32))
        modules[width] = (built[0], built[1])

    step = metadata.get("step")
    return Hypernetwork(
        name=_loose_str(metadata.get("name")) or path.stem,
        layer_structure=layer_structure,
        activation_func=activation,
        add_layer_norm=add_layer_norm,
        activate_output=activate_output,
        use_dropout=use_dropout,
        dropout_structure=dropout,
        weight_initialization=_loose_str(metadata.get("weight_initialization")),
        step=step if isinstance(step, int) and not isinstance(step, bool) else None,
        sd_checkpoint=_loose_str(metadata.get("sd_checkpoint")),
        sd_checkpoint_name=_loose_str(metadata.get("sd_checkpoint_name")),
        modules=MappingProxyType(modules),
    )


def _layer_structure(name: str, value: object) -> tuple[float, ...]:
    if value is None:
        return DEFAULT_LAYER_STRUCTURE
    if (
        not isinstance(value, (list, tuple))
        or len(value) < 2
        or not all(_is_number(x) and math.isfinite(x) and 0 < x <= 64 for x in value)
    ):
        raise HypernetworkError(f"{name}: invalid layer_structure {value!r}")
    if value[0] != 1 or value[-1] != 1:
        raise HypernetworkError(f"{name}: layer_structure {list(value)} must start and end with 1")
    return tuple(float(x) for x in value)


def _dropout_structure(name: str, value: object, length: int) -> tuple[float, ...]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != length
        or not all(_is_number(x) and 0 <= x < 1 for x in value)
    ):
        raise HypernetworkError(f"{name}: invalid dropout_structure {value!r} for {length} layer sizes")
    return tuple(float(x) for x in value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flag(name: str, key: str, value: object, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise HypernetworkError(f"{name}: {key} must be true or false, not {value!r}")


def _optional_str(name: str, key: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise HypernetworkError(f"{name}: {key} must be a string, not {value!r}")


def _loose_str(value: object) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- applying


class _AttentionView:
    """The attention module as a wrapped processor sees it: the same, except ``to_k`` and ``to_v``."""

    __slots__ = ("_attention", "to_k", "to_v")

    def __init__(
        self,
        attention: Attention | _AttentionView,
        to_k: Callable[[torch.Tensor], torch.Tensor],
        to_v: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self._attention = attention
        self.to_k = to_k
        self.to_v = to_v

    def __getattr__(self, name: str) -> Any:
        return getattr(self._attention, name)


_Stage = tuple[HypernetworkModule, HypernetworkModule, float]


class HypernetworkAttnProcessor:
    """An attention processor that sends the k and v inputs through hypernetworks, then delegates.

    ``stages`` are (k module, v module, strength), applied in order. The wrapped processor still
    computes the attention (so SDPA, xformers, LoRA-patched projections keep working); it is handed
    a view of the attention module whose ``to_k`` / ``to_v`` transform their input first.
    """

    def __init__(self, inner: Any, stages: Sequence[_Stage]) -> None:
        self.inner = inner
        self.stages = tuple(stages)
        # Attention.forward passes on only the cross_attention_kwargs that
        # inspect.signature(processor.__call__) names; expose the wrapped processor's signature so
        # it still receives what it would have received without the wrapper.
        self.__call__ = functools.update_wrapper(  # type: ignore[method-assign]
            functools.partial(type(self).__call__, self), inner.__call__
        )

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        stages = self.stages
        to_k, to_v = attn.to_k, attn.to_v

        def hyper_k(context: torch.Tensor) -> torch.Tensor:
            for module_k, _, strength in stages:
                context = module_k(context, strength)
            return to_k(context)

        def hyper_v(context: torch.Tensor) -> torch.Tensor:
            for _, module_v, strength in stages:
                context = module_v(context, strength)
            return to_v(context)

        return self.inner(_AttentionView(attn, hyper_k, hyper_v), hidden_states, *args, **kwargs)


@contextmanager
def applied(unet: UNet2DConditionModel, hypernets: Sequence[tuple[Hypernetwork, float]]) -> Iterator[None]:
    """Within the ``with``, ``unet``'s attention runs through ``hypernets`` at their strengths.

    Every cross-attention (``attn2``) transforms its context for k and v through each hypernetwork
    in turn; a self-attention (``attn1``) does so through those hypernetworks that have a module for
    its width (as A1111 does). On exit, normal or not, the original processors are back.

    Raises :class:`HypernetworkError` (before touching the UNet) when a hypernetwork has no module
    for the model's cross-attention width, or a strength is not a finite number. The hypernetworks
    are used on the UNet's device (copied there for the duration if they live elsewhere).
    """
    from diffusers.models.attention_processor import Attention

    if not hypernets:
        yield
        return
    for hypernet, strength in hypernets:
        if not _is_number(strength) or not math.isfinite(strength):
            raise HypernetworkError(
                f"hypernetwork {hypernet.name!r}: strength must be a finite number, not {strength!r}"
            )
    attentions = [module for module in unet.modules() if isinstance(module, Attention)]
    context_widths = sorted({int(a.cross_attention_dim) for a in attentions if a.is_cross_attention})
    for hypernet, _ in hypernets:
        missing = [width for width in context_widths if width not in hypernet.modules]
        if missing:
            raise HypernetworkError(
                f"hypernetwork {hypernet.name!r} is for context width {_widths(hypernet.widths)}, but this model's "
                f"cross-attention context is {_widths(tuple(missing))} wide: it was made for another model family "
                "(SD1.x uses 768, SD2.x 1024)"
            )
    if any(getattr(a, "fused_projections", False) for a in attentions):
        raise HypernetworkError("hypernetworks cannot be applied to a UNet with fused qkv projections")

    device = unet.device
    placed = [(hypernet.to(device), float(strength)) for hypernet, strength in hypernets]
    plan: list[tuple[Attention, HypernetworkAttnProcessor]] = []
    for attention in attentions:
        width = int(attention.cross_attention_dim)
        stages = [
            (*hypernet.modules[width], strength)
            for hypernet, strength in placed
            if width in hypernet.modules
        ]
        if stages:
            plan.append((attention, HypernetworkAttnProcessor(attention.processor, stages)))

    restore: list[tuple[Attention, Any]] = []
    try:
        for attention, processor in plan:
            restore.append((attention, attention.processor))
            attention.set_processor(processor)
        yield
    finally:
        for attention, original in reversed(restore):
            attention.set_processor(original)


def _widths(widths: Sequence[int]) -> str:
    return ", ".join(str(w) for w in widths) or "none"
