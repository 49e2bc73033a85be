"""What a model file is and whether the platform may read it, from its header alone (no torch).

`model_file_check(path, kind)` is the one safety gate a model file passes before any list shows
it or any worker is handed it (the registry's scan calls it; uploads and the ModelZoo may call it
before placing a file). It refuses, with `a1111.errors.InvalidField` and a message fit to show:

* a file named `.safetensors` that is not one: no 8-byte length, a header over 100 MB or past the
  end, a header that is not a JSON object, a tensor entry without a known dtype, a shape or a
  `[begin, end]` pair, offsets past the end of the data, overlapping, or not matching the shape;
* a pickled file (`.ckpt`, `.pt`, `.bin`, `.pth`, …: unpickling can run code) unless pickles are
  allowed for its kind (`pickles_allowed`): upscalers and face models (`.pth` is how ESRGAN, GFPGAN
  and CodeFormer ship) always, everything else only when the operator sets
  `ATELIER_ALLOW_PICKLED_MODELS`. An allowed pickle is still read statically here (its opcodes,
  never executed) and refused when it names any Python global outside torch's tensor rebuilders
  and plain containers; workers then read it with `torch.load(weights_only=True)` only.

`model_file_info(path)` says what it is (`ModelFileInfo`: format, size, SHA-256 from the
registry's hash cache, architecture from tensor names and shapes: SD 1.x / 2.x / SDXL checkpoints,
a LoRA and its base, a VAE, a ControlNet, an upscaler, an embedding, or "unknown"). Only the header
is read; the parse is remembered by (path, size, mtime), as the hash is.
"""

from __future__ import annotations

import io
import json
import pickletools
import struct
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from a1111.errors import InvalidField

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_PICKLE_SCAN_BYTES = 256 * 1024 * 1024  # a state dict's pickle is small; its tensors are stored apart
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
# Kinds whose pickles are always read (weights only): A1111's upscalers and face models ship as .pth.
WEIGHTS_ONLY_PICKLE_KINDS = frozenset({"ESRGAN", "GFPGAN", "Codeformer"})
FIELD = "file"

# Bytes per element of every dtype the safetensors format names.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
    "C64": 8,
}

ARCHITECTURE_TITLES = {
    "sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl-refiner": "SDXL refiner",
    "lora": "LoRA", "vae": "VAE", "controlnet": "ControlNet", "upscaler": "upscaler",
    "embedding": "embedding", "unknown": "unknown",
}
# A UNet's cross-attention width (its text context) names its family.
CONTEXT_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl-refiner"}

# Python globals a weights-only torch pickle may name (torch's own allow-list, in substance).
_SAFE_GLOBAL_MODULES = ("torch", "collections", "builtins")
_SAFE_GLOBAL_NAMES = frozenset({
    "collections.OrderedDict", "collections.defaultdict",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor", "torch.Size", "torch.device",
    "torch.nn.modules.container.ParameterDict", "torch.serialization._get_layout",
    "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.slice", "builtins.complex",
})
_SAFE_STORAGE_SUFFIXES = ("Storage",)  # torch.FloatStorage, torch.HalfStorage, …
_SAFE_DTYPE_NAMES = frozenset({
    "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16", "int32", "int64",
    "uint8", "bool", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2",
})


@dataclass(frozen=True)
class ModelFileInfo:
    """What one model file (or diffusers folder) is. `sha256` is None for a folder."""

    format: str  # "safetensors" | "diffusers-folder" | "pickle"
    size: int
    sha256: str | None
    architecture: str  # a key of ARCHITECTURE_TITLES
    base: str = ""  # for a LoRA, ControlNet or embedding: the family it is for ("sd1", "sd2", "sdxl"), if known
    tensors: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def architecture_title(self) -> str:
        title = ARCHITECTURE_TITLES.get(self.architecture, self.architecture)
        if self.base and self.architecture not in CONTEXT_FAMILIES.values():
            return f"{title} ({ARCHITECTURE_TITLES.get(self.base, self.base)})"
        return title

    def as_json(self) -> dict:
        return {
            "format": self.format, "size": self.size, "sha256": self.sha256, "architecture": self.architecture,
            "architecture_title": self.architecture_title, "base": self.base or None,
        }


@dataclass(frozen=True)
class _Header:
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]


class _ParseCache:
    """Header parses by (resolved path, size, mtime_ns), bounded; a changed file is parsed again."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._items: OrderedDict[tuple[str, int, int, str], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int, str]) -> object | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, int, int, str], value: object) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)


_PARSES = _ParseCache()


def pickles_allowed(kind: str | None) -> bool:
    """Whether pickled files of this model kind may be listed (and read weights-only by workers)."""
    from django.conf import settings

    return kind in WEIGHTS_ONLY_PICKLE_KINDS or bool(getattr(settings, "ATELIER_ALLOW_PICKLED_MODELS", False))


def is_pickle_name(name: str) -> bool:
    return Path(name).suffix.lower() in PICKLE_SUFFIXES


def model_name_check(name: str, kind: str | None) -> None:
    """Refuse, before any byte is stored, a pickled file name for a kind that may not hold one
    (what an upload into a `models/<kind>` folder calls first)."""
    if is_pickle_name(name) and not pickles_allowed(kind):
        raise InvalidField(_pickle_refusal(Path(name).name, kind), field=FIELD)


def model_kind_for(area: str, relative: str) -> str | None:
    """The model kind a FileBrowser place holds files of (`home/models/Lora/x` → "Lora", `public/VAE/x`
    → "VAE"), or None outside the model folders."""
    from django.conf import settings

    parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
    if area not in ("public",) and parts[:1] == ["models"]:
        parts = parts[1:]
    elif area != "public":
        return None
    kind = parts[0] if len(parts) > 1 else None
    return kind if kind in settings.ATELIER_PUBLIC_MODEL_DIRS else None


def model_upload_check(area: str, relative: str, received: Path | None = None) -> None:
    """What an upload (or a move, or a ModelZoo download) into a model folder must pass: before any
    byte is stored, the name (`received` None: a pickle the kind may not hold is refused); once the
    file is complete, its content (`model_file_check`, before it is placed). Outside the model
    folders nothing is checked."""
    kind = model_kind_for(area, relative)
    if kind is None:
        return
    name = relative.rsplit("/", 1)[-1]
    model_name_check(name, kind)
    if received is not None and (name.lower().endswith(".safetensors") or is_pickle_name(name)):
        try:
            model_file_check(received, kind, name=name)
        except InvalidField as refusal:
            raise InvalidField(refusal.message.replace(received.name, name, 1), field=FIELD) from None


def model_file_problem(path: Path, kind: str | None) -> str:
    """Why a file in a model folder is not listed ("" when it is fine), for pages that show the files."""
    try:
        model_file_check(path, kind)
    except InvalidField as refusal:
        return refusal.message
    except OSError as exc:
        return f"{path.name} cannot be read ({type(exc).__name__})"
    return ""


def _pickle_refusal(name: str, kind: str | None) -> str:
    where = f" in {kind}" if kind else ""
    return (
        f"{name} is a pickled file ({Path(name).suffix}){where}: loading it can run code, and this platform does not "
        "allow pickled models (ATELIER_ALLOW_PICKLED_MODELS): convert it to .safetensors first"
    )


def _cache_key(path: Path, what: str) -> tuple[tuple[str, int, int, str], int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, what), stat.st_size


def _refuse(path: Path, why: str) -> InvalidField:
    return InvalidField(f"{path.name} is not a valid safetensors file: {why}", field=FIELD)


def read_safetensors_header(path: Path) -> _Header:
    """The tensor shapes and metadata of a `.safetensors` file, validated against its size (the
    header only is read). `InvalidField` saying what is wrong; the parse is cached."""
    key, size = _cache_key(path, "safetensors")
    cached = _PARSES.get(key)
    if isinstance(cached, InvalidField):
        raise cached
    if isinstance(cached, _Header):
        return cached
    try:
        header = _parse_safetensors(path, size)
    except InvalidField as refusal:
        _PARSES.put(key, refusal)
        raise
    _PARSES.put(key, header)
    return header


def _parse_safetensors(path: Path, size: int) -> _Header:
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise _refuse(path, "it is shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise _refuse(path, f"its header would be {length} bytes (at most {MAX_HEADER_BYTES})")
        if length < 2 or 8 + length > size:
            raise _refuse(path, f"its header length ({length}) does not fit the file ({size} bytes)")
        raw = handle.read(length)
    if not raw.startswith(b"{"):
        raise _refuse(path, "its header is not a JSON object")
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _refuse(path, "its header is not JSON") from None
    if not isinstance(parsed, dict):
        raise _refuse(path, "its header is not a JSON object")
    data_size = size - 8 - length
    shapes: dict[str, tuple[int, ...]] = {}
    metadata: dict[str, str] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in parsed.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise _refuse(path, "its __metadata__ is not an object")
            metadata = {str(k): v for k, v in entry.items() if isinstance(v, str)}
            continue
        if not isinstance(entry, dict):
            raise _refuse(path, f"tensor {name!r} has no description")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise _refuse(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _refuse(path, f"tensor {name!r} has no valid shape")
        if (
            not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _refuse(path, f"tensor {name!r} has no valid data_offsets")
        if offsets[1] > data_size:
            raise _refuse(path, f"tensor {name!r} ends past the end of the file (truncated?)")
        elements = 1
        for dim in shape:
            elements *= dim
        if offsets[1] - offsets[0] != elements * DTYPE_BYTES[dtype]:
            raise _refuse(path, f"tensor {name!r}'s data does not match its shape and dtype")
        shapes[name] = tuple(shape)
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    for (_, end, before), (start, _, after) in zip(spans, spans[1:]):
        if start < end:
            raise _refuse(path, f"tensors {before!r} and {after!r} overlap")
    return _Header(shapes=shapes, metadata=metadata)


def model_file_check(path: Path, kind: str | None = None, *, name: str | None = None) -> None:
    """Refuse (`InvalidField`, a message saying why and what to do) a file the platform must not
    list or hand to a worker: see the module's docstring. A diffusers folder is checked file by file.
    `name`: the name the file will have, when `path` is a temporary one (its suffix says the format)."""
    if path.is_dir():
        _check_folder(path, kind)
        return
    suffix = Path(name or path.name).suffix.lower()
    if suffix == ".safetensors":
        try:
            read_safetensors_header(path)
        except InvalidField as refusal:
            if name is None:
                raise
            # the message names the file as its user does, not by its temporary name
            raise InvalidField(refusal.message.replace(path.name, Path(name).name, 1), field=FIELD) from None
        return
    if suffix in PICKLE_SUFFIXES:
        if not pickles_allowed(kind):
            raise InvalidField(_pickle_refusal(name or path.name, kind), field=FIELD)
        _check_pickle(path)
        return
    raise InvalidField(f"{path.name}: {suffix or 'no extension'} is not a model file format (use .safetensors)", field=FIELD)


def _check_folder(folder: Path, kind: str | None) -> None:
    if not (folder / "model_index.json").is_file() and not (folder / "config.json").is_file():
        raise InvalidField(f"{folder.name} is a folder but not a diffusers model (no model_index.json)", field=FIELD)
    root = folder.resolve()
    weights = [p for p in folder.rglob("*") if p.is_file() and (p.suffix.lower() == ".safetensors" or is_pickle_name(p.name))]
    for path in weights:
        if not path.resolve().is_relative_to(root):
            raise InvalidField(f"{folder.name} holds a link out of its folder ({path.name})", field=FIELD)
    safe = {p.parent for p in weights if p.suffix.lower() == ".safetensors"}
    for path in weights:
        if path.suffix.lower() == ".safetensors":
            read_safetensors_header(path)
        elif path.parent not in safe:  # a component with pickled weights only: diffusers would unpickle them
            model_file_check(path, kind)


def _check_pickle(path: Path) -> None:
    """Refuse a pickle whose opcodes name any global beyond tensors and plain containers (read, never run)."""
    key, _ = _cache_key(path, "pickle")
    cached = _PARSES.get(key)
    if isinstance(cached, InvalidField):
        raise cached
    if cached is not None:
        return
    try:
        for stream in _pickle_streams(path):
            _scan_pickle(path, stream)
    except InvalidField as refusal:
        _PARSES.put(key, refusal)
        raise
    _PARSES.put(key, True)


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickles in a torch file: each `*.pkl` of a zip (torch ≥ 1.6), or the leading stream of a legacy file."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [info for info in archive.infolist() if info.filename.endswith(".pkl")]
                if not members:
                    raise InvalidField(f"{path.name} is a zip without a pickle: not a torch weights file", field=FIELD)
                streams = []
                for info in members:
                    if info.file_size > MAX_PICKLE_SCAN_BYTES:
                        raise InvalidField(f"{path.name}'s pickle is too large to check ({info.file_size} bytes)", field=FIELD)
                    streams.append(archive.read(info))
                return streams
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InvalidField(f"{path.name} is a damaged zip ({type(exc).__name__})", field=FIELD) from None
    with open(path, "rb") as handle:
        return [handle.read(MAX_PICKLE_SCAN_BYTES)]


def _scan_pickle(path: Path, data: bytes) -> None:
    stream = io.BytesIO(data)
    # A legacy torch file is several pickles in a row (magic, protocol, sys info, the object, the
    # storage keys) followed by raw storage bytes; scanning stops at the first non-pickle byte.
    for index in range(5):
        start = stream.tell()
        if start >= len(data):
            return
        try:
            _scan_one_pickle(path, stream)
        except InvalidField:
            raise
        except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError and others for junk
            if index == 0:
                raise InvalidField(
                    f"{path.name} is not a readable pickle ({type(exc).__name__}): not a torch weights file", field=FIELD
                ) from None
            return  # past the pickles: the legacy format's raw tensor bytes


def _scan_one_pickle(path: Path, stream: io.BytesIO) -> None:
    memo: dict[int, object] = {}
    strings: list[object] = []  # what the last opcodes pushed, as far as STACK_GLOBAL needs
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, qualname = str(arg).partition(" ")
            _check_global(path, module, qualname)
        elif name == "STACK_GLOBAL":
            if len(strings) < 2 or not all(isinstance(s, str) for s in strings[-2:]):
                raise InvalidField(f"{path.name} names a Python global that cannot be checked: refused", field=FIELD)
            _check_global(path, str(strings[-2]), str(strings[-1]))
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"):
            strings.append(arg)
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(int(arg)))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = strings[-1] if strings else None
        elif name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif name != "STOP":
            strings.append(None)
        if name == "STOP":
            return


def _check_global(path: Path, module: str, qualname: str) -> None:
    full = f"{module}.{qualname}"
    if full in _SAFE_GLOBAL_NAMES:
        return
    if module == "torch" and (qualname.endswith(_SAFE_STORAGE_SUFFIXES) or qualname in _SAFE_DTYPE_NAMES):
        return
    raise InvalidField(
        f"{path.name} is refused: its pickle would call {full}, which is not a tensor or plain data "
        "(unpickling it could run code); convert it to .safetensors from a trusted copy",
        field=FIELD,
    )


# --- what a file is ----------------------------------------------------------------------------


def model_file_info(path: Path, *, with_hash: bool = True) -> ModelFileInfo:
    """Format, size, SHA-256 (the registry's cached hash) and architecture of a model file or
    diffusers folder. Refuses like `model_file_check` a `.safetensors` file that is not one;
    a pickle is described by its name only (it is never opened here)."""
    if path.is_dir():
        return _folder_info(path)
    size = path.stat().st_size
    sha256 = None
    if with_hash:
        from inference.model_registry import cached_sha256

        sha256 = cached_sha256(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return ModelFileInfo(format="pickle", size=size, sha256=sha256, architecture="unknown")
    header = read_safetensors_header(path)
    architecture, base = detect_architecture(header.shapes)
    return ModelFileInfo(
        format="safetensors", size=size, sha256=sha256, architecture=architecture, base=base,
        tensors=len(header.shapes), metadata=dict(header.metadata),
    )


def _folder_info(folder: Path) -> ModelFileInfo:
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    architecture = "unknown"
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    class_name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    if "XL" in class_name:
        architecture = "sdxl-refiner" if isinstance(index, dict) and index.get("text_encoder") in (None, [None, None]) else "sdxl"
    elif class_name.startswith("StableDiffusion"):
        try:
            unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
            architecture = CONTEXT_FAMILIES.get(int(unet.get("cross_attention_dim", 0)), "unknown")
        except (OSError, ValueError, TypeError):
            architecture = "unknown"
    return ModelFileInfo(format="diffusers-folder", size=size, sha256=None, architecture=architecture)


# Text-encoder prefixes of single-file LDM/SGM checkpoints, checked in order.
_CHECKPOINT_MARKERS = (
    ("sdxl", "conditioner.embedders.1.model."),  # SDXL base: CLIP-L and OpenCLIP bigG
    ("sdxl-refiner", "conditioner.embedders.0.model."),  # SDXL refiner: OpenCLIP bigG alone
    ("sd2", "cond_stage_model.model."),  # OpenCLIP ViT-H
    ("sd1", "cond_stage_model.transformer."),  # CLIP ViT-L
)
_UNET = "model.diffusion_model."


def _context_width(shapes: dict[str, tuple[int, ...]], *, key_part: str) -> int | None:
    """The cross-attention key projection's input width (the text context) of the first match."""
    for name in sorted(shapes):
        shape = shapes[name]
        if key_part in name and len(shape) == 2:
            return shape[1]
    return None


def _family_of_width(width: int | None) -> str:
    return CONTEXT_FAMILIES.get(width or 0, "")


def detect_architecture(shapes: dict[str, tuple[int, ...]]) -> tuple[str, str]:
    """(architecture, base) from a safetensors header's tensor names and shapes."""
    names = list(shapes)
    if any(n.startswith(_UNET) for n in names):
        for family, prefix in _CHECKPOINT_MARKERS:
            if any(n.startswith(prefix) for n in names):
                return family, ""
        family = _family_of_width(_context_width(shapes, key_part="attn2.to_k.weight"))
        return (family or "unknown"), ""
    if any(n.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) or ".lora_down." in n
           or ".lora_A." in n or ".lora.down." in n for n in names):
        return "lora", _lora_base(shapes)
    if any(n.startswith(("control_model.", "controlnet_cond_embedding.")) or "input_hint_block" in n for n in names):
        width = _context_width(shapes, key_part="attn2.to_k.weight")
        return "controlnet", _family_of_width(width)
    vae_prefixes = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "first_stage_model.")
    if names and all(n.startswith(vae_prefixes) for n in names) and any("decoder." in n for n in names):
        return "vae", ""
    if any(n.startswith(("conv_first.", "model.0.")) for n in names) and any(
        "rdb" in n.lower() or n.startswith(("body.", "model.1.sub.")) for n in names
    ):
        return "upscaler", ""
    if "emb_params" in shapes or any(n.startswith("string_to_param") for n in names):
        vectors = shapes.get("emb_params") or next(
            (s for n, s in shapes.items() if n.startswith("string_to_param")), ()
        )
        return "embedding", {768: "sd1", 1024: "sd2"}.get(vectors[-1] if vectors else 0, "")
    if "clip_l" in shapes and "clip_g" in shapes:
        return "embedding", "sdxl"
    return "unknown", ""


def _lora_base(shapes: dict[str, tuple[int, ...]]) -> str:
    names = list(shapes)
    if any(n.startswith(("lora_te1_", "lora_te2_")) for n in names):
        return "sdxl"
    for name in sorted(names):
        # the down projection of a cross-attention key/value reads the text context: [rank, width]
        if ("attn2_to_k" in name or "attn2.to_k" in name) and ("lora_down" in name or "lora_A" in name or "lora.down" in name):
            shape = shapes[name]
            if len(shape) == 2:
                return _family_of_width(shape[1])
    return ""
