"""Apply A1111-style LoRA files to a cached pipeline for one batch, without reloading the checkpoint.

A :class:`LoraSet` belongs to one cached pipeline (one set of UNet and text-encoder modules). Each
LoRA file is loaded into those modules once, as a PEFT adapter named after the file's sha256, and
stays there (least recently used first out) for later batches::

    with lora_set.applied(pipeline, [LoraSpec(path, sha256, te_weight=0.8, unet_weight=0.8)]):
        images = pipeline(...).images

Inside the ``with`` exactly the given adapters are active, with ``te_weight`` on the text encoder
and ``unet_weight`` on the UNet (A1111's ``<lora:name:te:unet>``); afterwards no adapter is active,
even after an exception, so the next batch gets the plain model. Adapters live in the shared
modules, so every pipeline object built over the same modules (``Pipeline(**cached.components)``)
sees them. A zero weight leaves that adapter out of that module entirely: the output is bit-identical
to the model without the LoRA.

Accepted files are kohya-ss / A1111 LoRAs for Stable Diffusion 1.x/2.x (``lora_unet_*`` and
``lora_te_*`` keys with ``lora_down``, ``lora_up`` and ``alpha``), as ``.safetensors`` only: pickle
files can run arbitrary code when loaded. Before anything is loaded, every key is checked against the
pipeline's modules and shapes; a LoRA made for another model family (SDXL, SD2 on SD1, ...) or in an
unsupported variant (LyCORIS LoHa/LoKr, DoRA) raises :class:`LoraMismatch` naming a few keys, and the
pipeline is left as it was. Loading and activation go through diffusers' ``load_lora_weights`` and
PEFT's tuner layers.

A LoraSet is not thread-safe: a worker runs one batch at a time on a pipeline.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from runtime.specs import LoraSpec
from runtime.weight_files import MAX_NAMED, few, require_safetensors

if TYPE_CHECKING:
    import diffusers

__all__ = ["LoraMismatch", "LoraSet"]

logger = logging.getLogger(__name__)

UNET = "unet"
TEXT_ENCODER = "text_encoder"
# Which pipeline component each kohya key prefix addresses (SD1.x/2.x: one text encoder).
_KOHYA_PREFIXES = {UNET: "lora_unet_", TEXT_ENCODER: "lora_te_"}
_DOWN, _UP, _ALPHA = "lora_down.weight", "lora_up.weight", "alpha"


class LoraMismatch(ValueError):
    """The file cannot be used as a LoRA of this pipeline. The message is safe to show to users."""


@dataclass(frozen=True)
class _LoadedLora:
    adapter_name: str
    components: frozenset[str]  # the pipeline components the LoRA has weights for


def adapter_name_for(sha256: str) -> str:
    """A PEFT adapter name for a file hash: an identifier, and distinct for distinct hashes."""
    cleaned = re.sub(r"[^0-9A-Za-z_]", "_", sha256)
    if cleaned != sha256 or not cleaned:  # sanitising could merge two names: keep them apart
        cleaned += "_" + hashlib.sha256(sha256.encode()).hexdigest()[:12]
    return f"lora_{cleaned}"


def _mismatch(spec: LoraSpec, reason: str) -> LoraMismatch:
    return LoraMismatch(f"LoRA {Path(spec.path).name!r} does not fit this checkpoint: {reason}")


# --------------------------------------------------------------------------- the pipeline's modules


def _components(pipeline: diffusers.DiffusionPipeline) -> dict[str, torch.nn.Module]:
    """The pipeline's modules that LoRA files address, by component name."""
    found = {name: getattr(pipeline, name, None) for name in _KOHYA_PREFIXES}
    return {name: module for name, module in found.items() if isinstance(module, torch.nn.Module)}


def _adaptable_layers(module: torch.nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.nn.Module]]:
    """(name, layer) for every Linear and Conv2d, seen through the LoRA wrappers PEFT puts around them."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, child in module.named_children():
        full_name = prefix + name
        if isinstance(child, BaseTunerLayer):
            yield full_name, child.get_base_layer()
        elif isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
            yield full_name, child
        else:
            yield from _adaptable_layers(child, full_name + ".")


def _kohya_layer_table(components: Mapping[str, torch.nn.Module]) -> dict[str, tuple[str, torch.nn.Module]]:
    """kohya LoRA name (``lora_unet_down_blocks_0_..._to_q``) -> (component, layer)."""
    table: dict[str, tuple[str, torch.nn.Module]] = {}
    for component, module in components.items():
        prefix = _KOHYA_PREFIXES[component]
        if component == TEXT_ENCODER and not hasattr(module, "text_model"):
            prefix += "text_model_"  # transformers 5 flattened CLIPTextModel; LoRA files keep the old names
        for name, layer in _adaptable_layers(module):
            table[prefix + name.replace(".", "_")] = (component, layer)
    return table


def _lora_layers(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    return (m for m in module.modules() if isinstance(m, LoraLayer))


# --------------------------------------------------------------------------- reading and checking files


def _read_lora_file(spec: LoraSpec) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(spec.path)
    require_safetensors(path, "LoRA", LoraMismatch)
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise _mismatch(spec, f"it is not a valid safetensors file ({exc})") from None


def _expected_shapes(layer: torch.nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ``lora_down`` and ``lora_up`` shapes a LoRA of ``rank`` has for ``layer``."""
    if isinstance(layer, torch.nn.Conv2d):
        return (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
    assert isinstance(layer, torch.nn.Linear)
    return (rank, layer.in_features), (layer.out_features, rank)


def _family_hint(names: Iterable[str]) -> str:
    names = list(names)
    if any(n.startswith(("lora_te1_", "lora_te2_")) for n in names):
        return " (it looks like an SDXL LoRA)"
    if any(n.startswith(("lora_transformer_", "lora_unet_double_blocks", "lora_unet_single_blocks")) for n in names):
        return " (it looks like a LoRA for a transformer model such as Flux or SD3)"
    return ""


def _check_against(
    spec: LoraSpec, tensors: Mapping[str, torch.Tensor], table: Mapping[str, tuple[str, torch.nn.Module]]
) -> dict[str, str]:
    """Raise :class:`LoraMismatch` unless every key of ``tensors`` fits a layer; kohya layer name -> component."""
    if not tensors:
        raise _mismatch(spec, "the file holds no weights")
    parts: dict[str, set[str]] = {}
    for key in tensors:
        name, _, suffix = key.partition(".")
        parts.setdefault(name, set()).add(suffix)
    variant = {f"{n}.{s}" for n, suffixes in parts.items() for s in suffixes if s not in (_DOWN, _UP, _ALPHA)}
    if variant:
        raise _mismatch(
            spec,
            f"it is not a plain LoRA: {len(variant)} weights of another kind ({few(variant)}); "
            "LyCORIS (LoHa, LoKr) and DoRA files are not supported",
        )
    unknown = parts.keys() - table.keys()
    if unknown:
        raise _mismatch(
            spec,
            f"{len(unknown)} of its {len(parts)} layers are not in this checkpoint{_family_hint(unknown)}: "
            f"{few(unknown)}",
        )
    incomplete = {n for n, suffixes in parts.items() if not {_DOWN, _UP} <= suffixes}
    if incomplete:
        raise _mismatch(spec, f"{len(incomplete)} layers lack lora_down or lora_up weights: {few(incomplete)}")
    wrong: dict[str, str] = {}
    for name in parts:
        down, up = tensors[f"{name}.{_DOWN}"], tensors[f"{name}.{_UP}"]
        rank = down.shape[0] if down.ndim else 0  # a scalar lora_down fits nothing
        want_down, want_up = _expected_shapes(table[name][1], rank=rank)
        if (tuple(down.shape), tuple(up.shape)) != (want_down, want_up):
            found, expected = f"{list(down.shape)}/{list(up.shape)}", f"{list(want_down)}/{list(want_up)}"
            wrong[name] = f"{name} is {found} in the file, {expected} here"
    if wrong:
        shown = "; ".join(wrong[n] for n in sorted(wrong)[:MAX_NAMED])
        more = f" (and {len(wrong) - MAX_NAMED} more)" if len(wrong) > MAX_NAMED else ""
        raise _mismatch(
            spec, f"{len(wrong)} layers have other shapes (made for another model family?): {shown}{more}"
        )
    return {name: table[name][0] for name in parts}


# --------------------------------------------------------------------------- activation


def _activate(module: torch.nn.Module, weights: Mapping[str, float]) -> None:
    """Make exactly ``weights``' adapters active in ``module``, each scaled by its weight."""
    names = list(weights)
    for layer in _lora_layers(module):
        layer.set_adapter(names, inference_mode=True)  # inference_mode: adapter weights stay frozen
        for name, weight in weights.items():
            layer.set_scale(name, weight)  # ignored by layers the adapter does not touch


def _deactivate(components: Mapping[str, torch.nn.Module]) -> None:
    """No adapter active in any of the modules: they compute exactly what the plain model does."""
    for module in components.values():
        for layer in _lora_layers(module):
            layer.set_adapter([], inference_mode=True)


def _active_weights(
    loras: Sequence[LoraSpec], loaded: Mapping[str, _LoadedLora], component: str
) -> dict[str, float]:
    """Adapter name -> weight on ``component``; a LoRA given twice adds up, zero weights are left out."""
    weights: dict[str, float] = {}
    for spec in loras:
        entry = loaded[spec.sha256]
        if component in entry.components:
            weights[entry.adapter_name] = weights.get(entry.adapter_name, 0.0) + spec.weight_for(component)
    return {name: weight for name, weight in weights.items() if weight != 0.0}


def _like_modules(
    tensors: Mapping[str, torch.Tensor], components: Mapping[str, torch.nn.Module]
) -> dict[str, torch.Tensor]:
    """The LoRA weights in the dtype and on the device of the modules (alphas stay CPU scalars)."""
    module = components[UNET] if UNET in components else next(iter(components.values()))
    reference = next(module.parameters())
    return {
        key: value if key.endswith(_ALPHA) else value.to(device=reference.device, dtype=reference.dtype)
        for key, value in tensors.items()
    }


# Messages a LoRA load logs that say nothing is wrong, and the loggers that log them.
_HARMLESS_LOAD_MESSAGES = (
    # transformers 5 lists the text encoder's *other* adapters as "MISSING ... newly initialized" whenever
    # a second adapter is loaded (they are untouched; real load errors are raised, not reported).
    "LOAD REPORT",
    # A LoRA without a text encoder (or UNet) part, which is common.
    "No LoRA keys associated to",
)
_LOAD_LOGGERS = ("transformers.integrations.peft", "diffusers.loaders.lora_base", "diffusers.loaders.peft")


class _DropHarmlessLoadMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in _HARMLESS_LOAD_MESSAGES)


@contextmanager
def _harmless_load_messages_silenced() -> Iterator[None]:
    """Keep worker logs free of misleading warnings for the duration of one load (:func:`_check_injected` checks it)."""
    loggers = [logging.getLogger(name) for name in _LOAD_LOGGERS]
    harmless = _DropHarmlessLoadMessages()
    for load_logger in loggers:
        load_logger.addFilter(harmless)
    try:
        with warnings.catch_warnings():
            # PEFT warns whenever a model gets a second adapter; several adapters per model is the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            yield
    finally:
        for load_logger in loggers:
            load_logger.removeFilter(harmless)


def _inject(
    pipeline: diffusers.DiffusionPipeline, spec: LoraSpec, tensors: dict[str, torch.Tensor], adapter_name: str
) -> None:
    """Load ``tensors`` (kohya keys) as adapter ``adapter_name`` through diffusers, which converts the keys."""
    try:
        with _harmless_load_messages_silenced():
            pipeline.load_lora_weights(tensors, adapter_name=adapter_name)
    except torch.OutOfMemoryError:
        raise
    except (ValueError, KeyError, RuntimeError) as exc:  # not expected after _check_against; still a mismatch
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _mismatch(spec, f"diffusers could not load it ({first_line})") from exc


def _check_injected(
    spec: LoraSpec, components: Mapping[str, torch.nn.Module], adapter_name: str, *, expected_layers: int
) -> None:
    """Every layer of the file became a LoRA layer (diffusers only warns about keys it could not place)."""
    injected = sum(1 for module in components.values() for layer in _lora_layers(module) if adapter_name in layer.lora_A)
    if injected != expected_layers:
        raise _mismatch(spec, f"only {injected} of its {expected_layers} layers could be applied")


# --------------------------------------------------------------------------- the set


class LoraSet:
    """The LoRA adapters loaded into one cached pipeline's UNet and text encoder (owned by the cache entry, not global).

    ``loads`` counts the files read and loaded so far; ``loaded()`` lists the sha256 of the adapters
    present, least recently used first. At most ``capacity`` adapters are kept between batches (one
    batch that needs more has them all while it runs).
    """

    def __init__(self, *, capacity: int = 8) -> None:
        self.capacity = max(1, capacity)
        self.loads = 0
        self._loaded: OrderedDict[str, _LoadedLora] = OrderedDict()
        self._modules: tuple[weakref.ref[torch.nn.Module], ...] = ()

    def loaded(self) -> list[str]:
        return list(self._loaded)

    def __contains__(self, sha256: object) -> bool:
        """Whether the LoRA with this sha256 is loaded (safe to ask from another thread)."""
        return sha256 in self._loaded

    @contextmanager
    def applied(self, pipeline: diffusers.DiffusionPipeline, loras: Sequence[LoraSpec]) -> Iterator[None]:
        """Run the ``with`` body with exactly ``loras`` active; no adapter is active afterwards.

        Files not loaded yet are loaded first (raising :class:`LoraMismatch` for a file that does not
        fit, ``FileNotFoundError`` for a missing one; the LoRAs loaded before it stay loaded), and the
        least recently used adapters beyond ``capacity`` are deleted.
        """
        components = _components(pipeline)
        self._bind(components)
        try:
            if loras:
                self._load_missing(pipeline, components, loras)
                for component, module in components.items():
                    _activate(module, _active_weights(loras, self._loaded, component))
            yield
        finally:
            _deactivate(components)
            self._evict(pipeline, keep=set())  # a batch may have needed more than the capacity

    def _bind(self, components: Mapping[str, torch.nn.Module]) -> None:
        """Tie this set to the modules it loads into: its records are only true for those."""
        modules = tuple(components.values())
        if not modules:
            raise TypeError("the pipeline has no UNet or text encoder to apply LoRAs to")
        if not self._modules:
            self._modules = tuple(weakref.ref(m) for m in modules)
        elif tuple(ref() for ref in self._modules) != modules:
            raise ValueError("this LoraSet belongs to another pipeline's modules; use one LoraSet per cached pipeline")

    def _load_missing(
        self, pipeline: diffusers.DiffusionPipeline, components: Mapping[str, torch.nn.Module], loras: Sequence[LoraSpec]
    ) -> None:
        try:
            for spec in loras:
                if spec.sha256 in self._loaded:
                    self._loaded.move_to_end(spec.sha256)
                else:
                    self._loaded[spec.sha256] = self._load(pipeline, components, spec)
        finally:
            _deactivate(components)  # a fresh adapter may come in active; deleting an active one re-activates others
            self._evict(pipeline, keep={spec.sha256 for spec in loras})

    def _load(
        self, pipeline: diffusers.DiffusionPipeline, components: Mapping[str, torch.nn.Module], spec: LoraSpec
    ) -> _LoadedLora:
        if not hasattr(pipeline, "load_lora_weights"):
            raise TypeError(f"{type(pipeline).__name__} cannot load LoRA weights")
        if getattr(pipeline, "text_encoder_2", None) is not None:  # SDXL: lora_te1_/lora_te2_ keys, LDM UNet names
            name = Path(spec.path).name
            raise LoraMismatch(f"LoRA {name!r} is not loaded: LoRAs on SDXL checkpoints are not supported yet")
        started = time.perf_counter()
        tensors = _read_lora_file(spec)
        layers = _check_against(spec, tensors, _kohya_layer_table(components))
        entry = _LoadedLora(adapter_name=adapter_name_for(spec.sha256), components=frozenset(layers.values()))
        try:
            _inject(pipeline, spec, _like_modules(tensors, components), entry.adapter_name)
            _check_injected(spec, components, entry.adapter_name, expected_layers=len(layers))
        except BaseException:
            pipeline.delete_adapters(entry.adapter_name)  # no half-loaded adapter stays behind
            raise
        self.loads += 1
        logger.info("loaded LoRA %s (%s) in %.2fs", Path(spec.path).name, spec.sha256[:12], time.perf_counter() - started)
        return entry

    def _evict(self, pipeline: diffusers.DiffusionPipeline, *, keep: set[str]) -> None:
        for sha256 in list(self._loaded):
            if len(self._loaded) <= self.capacity:
                return
            if sha256 in keep:
                continue
            entry = self._loaded.pop(sha256)
            pipeline.delete_adapters(entry.adapter_name)
            logger.info("evicted LoRA %s", sha256[:12])
