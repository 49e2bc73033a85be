"""Which model files a user may use: their own, their tenant's and the public ones.

Entries carry A1111's identity forms (title `name.safetensors [hash10]`, model name, hash), so
every API resolves a checkpoint the way A1111 does. The SHA-256 of each file is computed
once and remembered by (path, size, mtime) in `ModelFileHash` (one query per folder scanned).

A caller that already knows the member's tenant (a submit resolves it once) passes it as
`tenant=`, so a scan does not look the membership up again.

Checkpoints and LoRAs are also subject to the team admin's model access rules and the plan's
allowed checkpoints (`tenants/access.py`): a model the member may not use is left out of every
list, and naming one is `ModelDenied` (403, saying who denied it). A caller resolving several
models for one request reads the rules once and passes them as `access=`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from typing import Final

from django.contrib.auth.models import AbstractUser

from inference.hashing import file_sha256
from inference.model_files import model_file_check, read_safetensors_header
from inference.models import ModelFileHash
from a1111.errors import InvalidField, NotFound
from tenants.access import FOLDER_RULE_KINDS, ModelAccess, ModelDenied, model_access_for
from tenants.models import Tenant
from tenants.selectors import tenant_for_user
from tenants.workdirs import public_model_dir, tenant_model_dir, user_model_dir

logger = logging.getLogger(__name__)

MODEL_SUFFIXES = (".safetensors",)
# The suffixes each kind's loader in the runtime reads. A1111 ships hypernetworks and embeddings
# as .pt: those are listed only when the operator allows pickles (ATELIER_ALLOW_PICKLED_MODELS),
# upscalers and face models (.pth) always; `inference.model_files.model_file_check` decides, and
# workers read every pickle with torch's weights-only unpickler. Checkpoints, LoRAs, VAEs and
# ControlNets load as .safetensors (or diffusers folders) only: a .ckpt is never listed.
SUFFIXES_BY_KIND = {
    "hypernetworks": (".safetensors", ".pt"),
    "embeddings": (".safetensors", ".pt", ".bin"),
    "ESRGAN": (".pth", ".safetensors"),  # Real-ESRGAN ships .pth (read weights-only by workers)
    "GFPGAN": (".pth", ".safetensors"),  # so do GFPGAN, CodeFormer and facexlib's detector
    "Codeformer": (".pth", ".safetensors"),
}
# Face restorers by A1111's name (its `face_restoration_model` option) → their model folder.
FACE_RESTORER_KINDS = {"CodeFormer": "Codeformer", "GFPGAN": "GFPGAN"}
# facexlib's helper networks share those folders; they are never restorers themselves.
_FACE_HELPER_PREFIXES = ("detection_", "parsing_")
SCOPES = ("user", "tenant", "public")  # resolution precedence when names collide


CHECKPOINT_FIELD = "override_settings.sd_model_checkpoint"


class LookUp:
    """The `tenant=` default: look the member's tenant up (callers that know it pass it)."""


LOOK_UP: Final = LookUp()
TenantArg = Tenant | None | LookUp


def _tenant(user: AbstractUser, tenant: TenantArg) -> Tenant | None:
    return tenant_for_user(user) if isinstance(tenant, LookUp) else tenant


class ModelNotFound(NotFound):
    """A model the member may not use; `field` is the request field that named it (adapters
    answer with it, so the member knows which setting to fix). `str()` is `"<field>: <message>"`."""

    def __init__(self, message: str, *, field: str = CHECKPOINT_FIELD) -> None:
        super().__init__(message, field=field)


class HashTitled:
    """A1111's identity forms of a model named `name` with SHA-256 `sha256`: `name [hash10]`."""

    name: str
    sha256: str

    @property
    def hash10(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash10}]"


@dataclass(frozen=True)
class ModelEntry(HashTitled):
    kind: str
    name: str  # path relative to its folder, e.g. "styles/anime.safetensors"
    path: Path
    sha256: str
    scope: str

    @property
    def model_name(self) -> str:
        return self.name.rsplit(".", 1)[0]

    def matches(self, ident: str) -> bool:
        ident = ident.strip()
        return ident in (
            self.title,
            self.name,
            self.model_name,
            f"{self.model_name} [{self.hash10}]",
            self.hash10,
            self.sha256,
            self.sha256[:8],
        )


def cached_sha256(path: Path) -> str:
    return cached_sha256s([path])[0]


def cached_sha256s(paths: list[Path]) -> list[str]:
    """The SHA-256 of each file, from `ModelFileHash` where its size and mtime still match (one
    query for all of them), else computed and remembered."""
    stats = [(str(path.resolve()), path.stat()) for path in paths]
    rows = {row.path: row for row in ModelFileHash.objects.filter(path__in=[key for key, _ in stats])} if stats else {}
    hashes = []
    for path, (key, stat) in zip(paths, stats, strict=True):
        row = rows.get(key)
        if row is not None and row.size == stat.st_size and row.mtime_ns == stat.st_mtime_ns:
            hashes.append(row.sha256)
            continue
        sha = file_sha256(path)
        ModelFileHash.objects.update_or_create(
            path=key, defaults={"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
        )
        hashes.append(sha)
    return hashes


class _RefusalLog:
    """Logs each refused file once per (path, size, mtime), not on every scan."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()

    def once(self, path: Path, reason: str) -> None:
        try:
            stat = path.stat()
        except OSError:
            return
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        logger.warning("model file not listed: %s (%s)", path, reason)


_REFUSALS = _RefusalLog()


def _usable(path: Path, kind: str) -> bool:
    """Whether a model file passes `model_file_check` (a valid safetensors file, or a pickle this
    kind may hold); a refused one is logged once and left out of every list."""
    try:
        model_file_check(path, kind)
    except InvalidField as refusal:
        _REFUSALS.once(path, refusal.message)
        return False
    except OSError:
        return False
    return True


def _scan(folder: Path, kind: str, scope: str) -> list[ModelEntry]:
    if not folder.is_dir():
        return []
    found: list[tuple[str, Path]] = []
    root = folder.resolve()
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in SUFFIXES_BY_KIND.get(kind, MODEL_SUFFIXES) or not path.is_file():
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(root):  # a symlink out of the folder is ignored
            continue
        if not _usable(resolved, kind):  # not a safetensors file, or a pickle not allowed here
            continue
        found.append((path.relative_to(folder).as_posix(), resolved))
    hashes = cached_sha256s([resolved for _, resolved in found])
    return [
        ModelEntry(kind=kind, name=name, path=resolved, sha256=sha, scope=scope)
        for (name, resolved), sha in zip(found, hashes, strict=True)
    ]


def model_list_for_user(
    user: AbstractUser, kind: str = "Stable-diffusion", *, tenant: TenantArg = LOOK_UP,
    access: ModelAccess | None = None, include_denied: bool = False,
) -> list[ModelEntry]:
    """The user's own models first, then the tenant's, then the public ones; checkpoints and
    LoRAs the member may not use (`tenants/access.py`) left out, unless `include_denied`."""
    tenant = _tenant(user, tenant)
    entries = _model_list(user, kind, tenant)
    rule_kind = FOLDER_RULE_KINDS.get(kind)
    if rule_kind is None or include_denied:
        return entries
    if access is None:
        access = model_access_for(user, tenant)
    if access.unrestricted:
        return entries
    return [entry for entry in entries if access.allows(rule_kind, entry.name)]


def model_access_for_user(user: AbstractUser, *, tenant: TenantArg = LOOK_UP) -> ModelAccess:
    """The model access rules for `user` (read once per request by a caller resolving several models)."""
    return model_access_for(user, _tenant(user, tenant))


def _model_list(user: AbstractUser, kind: str, tenant: Tenant | None) -> list[ModelEntry]:
    folders: list[tuple[Path, str]] = [(user_model_dir(user.get_username(), kind), "user")]
    if tenant is not None:
        folders.append((tenant_model_dir(tenant.slug, kind), "tenant"))
    folders.append((public_model_dir(kind), "public"))
    entries: list[ModelEntry] = []
    for folder, scope in folders:
        entries.extend(_scan(folder, kind, scope))
    return entries


def checkpoint_resolve_for_user(
    user: AbstractUser, ident: str | None, *, tenant: TenantArg = LOOK_UP, access: ModelAccess | None = None,
    field: str = CHECKPOINT_FIELD,
) -> ModelEntry:
    """Find a checkpoint by any A1111 id form; None means the user's default (the first one they
    may use). `ModelDenied` (403) for one the team's admin or the plan does not allow them."""
    tenant = _tenant(user, tenant)
    entries = model_list_for_user(user, "Stable-diffusion", tenant=tenant, include_denied=True)
    if access is None:
        access = model_access_for(user, tenant)
    if not entries:
        raise ModelNotFound(
            "no checkpoint is available: put a .safetensors file in your models/Stable-diffusion folder "
            "or run `manage.py make_tiny_model`"
        )
    if ident is None or not ident.strip():
        allowed = [entry for entry in entries if access.allows("checkpoint", entry.name)]
        if not allowed:
            raise ModelDenied(
                "none of the checkpoints you can see is allowed for you by your team's admin or plan: ask your team's admin",
                field=field,
            )
        return allowed[0]
    for entry in entries:
        if entry.matches(ident):
            access.check("checkpoint", entry.name, field=field)
            return entry
    raise ModelNotFound(f"unknown checkpoint {ident!r}; GET /api/v1/models lists the ones you may use")


def vae_resolve_for_user(user: AbstractUser, ident: str | None, *, tenant: TenantArg = LOOK_UP) -> ModelEntry | None:
    """A VAE file by any A1111 id form; None for the checkpoint's own VAE ("Automatic", "None")."""
    from a1111.generation import NO_VAE

    if ident is None or ident.strip() in NO_VAE:
        return None
    for entry in model_list_for_user(user, "VAE", tenant=tenant):
        if entry.matches(ident):
            return entry
    raise ModelNotFound(
        f"unknown VAE {ident!r}; GET /sdapi/v1/sd-vae lists the ones you may use", field="override_settings.sd_vae"
    )


def upscalers_for_user(user: AbstractUser) -> list[tuple[str, ModelEntry]]:
    """(the name A1111 shows, the file) for each ESRGAN-family upscaler the member may use."""
    from a1111.upscalers import A1111_ALIASES

    alias_of = {file_name: alias for alias, file_name in A1111_ALIASES.items()}
    return [(alias_of.get(entry.model_name, entry.model_name), entry) for entry in model_list_for_user(user, "ESRGAN")]


def upscaler_resolve_for_user(user: AbstractUser, ident: str, *, field: str = "hr_upscaler") -> ModelEntry:
    """An ESRGAN-family upscaler file by any id form, or by A1111's name for it ("R-ESRGAN 4x+")."""
    from a1111.upscalers import A1111_ALIASES

    wanted = A1111_ALIASES.get(ident.strip(), ident)
    for entry in model_list_for_user(user, "ESRGAN"):
        if entry.matches(wanted) or entry.matches(ident):
            return entry
    raise ModelNotFound(
        f"upscaler {ident!r} is not installed: put its .pth file in a models/ESRGAN folder; "
        "GET /sdapi/v1/upscalers lists the ones you may use",
        field=field,
    )


def controlnet_resolve_for_user(user: AbstractUser, ident: str, model_hash: str = "") -> ModelEntry:
    """A ControlNet file by name (any A1111 id form, or its stem in a subfolder); with the
    extension's `[hash]` suffix (`model_hash`), the file with that hash is preferred."""
    ident = ident.strip()
    entries = model_list_for_user(user, "ControlNet")
    named = [e for e in entries if e.matches(ident) or ident == e.model_name.rsplit("/", 1)[-1]]
    if model_hash:
        named = [e for e in named if e.sha256.startswith(model_hash.lower())] or named
    if not named:
        raise ModelNotFound(
            f"unknown ControlNet model {ident!r}: put it in your models/ControlNet folder, "
            "or pick one from GET /controlnet/model_list",
            field="alwayson_scripts.controlnet",
        )
    return named[0]


def _is_face_helper(entry: ModelEntry) -> bool:
    return entry.model_name.rsplit("/", 1)[-1].lower().startswith(_FACE_HELPER_PREFIXES)


def face_restorers_for_user(user: AbstractUser) -> dict[str, ModelEntry]:
    """A1111's restorer name → the file it would use, for the restorers the member has.

    The member's own file wins over the team's and the public one; within a folder the last
    name in order wins, so `GFPGANv1.4.pth` is picked over `GFPGANv1.3.pth`.
    """
    found: dict[str, ModelEntry] = {}
    for restorer, kind in FACE_RESTORER_KINDS.items():
        entries = [entry for entry in model_list_for_user(user, kind) if not _is_face_helper(entry)]
        for scope in SCOPES:
            in_scope = [entry for entry in entries if entry.scope == scope]
            if in_scope:
                found[restorer] = max(in_scope, key=lambda entry: entry.name.lower())
                break
    return found


def face_detector_for_user(user: AbstractUser) -> ModelEntry:
    """facexlib's RetinaFace file (`detection_*.pth`) from a GFPGAN or Codeformer folder the member
    may use; the ResNet-50 one is preferred over the small MobileNet one."""
    candidates = [
        entry
        for kind in FACE_RESTORER_KINDS.values()
        for entry in model_list_for_user(user, kind)
        if entry.model_name.rsplit("/", 1)[-1].lower().startswith("detection_")
    ]
    if not candidates:
        raise ModelNotFound(
            "face restoration needs facexlib's face detector: put detection_Resnet50_Final.pth in a "
            "models/GFPGAN or models/Codeformer folder",
            field="restore_faces",
        )
    return min(candidates, key=lambda entry: ("resnet50" not in entry.name.lower(), SCOPES.index(entry.scope)))


def face_restorer_resolve_for_user(
    user: AbstractUser, name: str | None, *, preferred: str | None = None,
    field: str = "override_settings.face_restoration_model",
) -> tuple[str, ModelEntry]:
    """(A1111's restorer name, its file) for a request.

    `name` is the one the request asked for (`override_settings.face_restoration_model`): it
    must be installed. Without one, `preferred` (the member's option) is used when installed,
    else whichever is. `ModelNotFound` says what to install.
    """
    installed = face_restorers_for_user(user)
    if name is not None:
        if name in installed:
            return name, installed[name]
        others = f"; installed: {', '.join(installed)}" if installed else ""
        raise ModelNotFound(
            f"face restorer {name} is not installed: put its model in a models/{FACE_RESTORER_KINDS[name]} "
            f"folder{others}",
            field=field,
        )
    for candidate in (preferred, *FACE_RESTORER_KINDS):
        if candidate in installed:
            return candidate, installed[candidate]
    raise ModelNotFound(
        "face restoration is not installed: put codeformer-v0.1.0.pth in a models/Codeformer folder or "
        "GFPGANv1.4.pth in a models/GFPGAN folder (with facexlib's detection_Resnet50_Final.pth), "
        "or send restore_faces: false",
        field="restore_faces",
    )


# --- prompt-generation models (BeautifulPrompt / promptgen) -----------------------------------

PROMPTGEN_KIND = "promptgen"
PROMPTGEN_FIELD = "model"
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # one file, or a sharded index
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class PromptgenModelEntry(HashTitled):
    """A causal language model folder (transformers layout) in a promptgen models folder.

    `name` is the folder's path relative to its models folder (e.g. "pai-bloom-1b1-text2prompt-sd"),
    `path` the folder, `weights` the file its identity is hashed from (`model.safetensors`, a
    sharded model's index, or a pickled `pytorch_model.bin`), `problem` why it cannot run ("" if it can).
    """

    name: str
    path: Path
    weights: Path
    sha256: str
    scope: str
    model_type: str = ""
    pickled: bool = False
    problem: str = ""

    kind = PROMPTGEN_KIND

    @property
    def model_name(self) -> str:
        return self.name

    def matches(self, ident: str) -> bool:
        ident = ident.strip()
        return ident in (self.title, self.name, self.name.rsplit("/", 1)[-1], self.hash10, self.sha256)


def _promptgen_entry(folder: Path, base: Path, scope: str) -> PromptgenModelEntry | None:
    """The entry of one model folder (one holding config.json), or None when it holds no weights."""
    import json

    from django.conf import settings

    from a1111.promptgen import causal_lm_problem

    root = base.resolve()
    weights = next((folder / name for name in SAFE_WEIGHTS if (folder / name).is_file()), None)
    pickled = weights is None
    if weights is None:
        weights = next((folder / name for name in PICKLED_WEIGHTS if (folder / name).is_file()), None)
    if weights is None or not weights.resolve().is_relative_to(root):
        return None
    problem = ""
    model_type = ""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        config = None
        problem = f"its config.json cannot be read ({type(exc).__name__})"
    if config is not None:
        problem = causal_lm_problem(config)
        model_type = str(config.get("model_type", "")) if isinstance(config, dict) else ""
    if not problem and pickled and not settings.ATELIER_ALLOW_PICKLED_MODELS:
        problem = (
            f"it holds pickled weights ({weights.name}), which can run code when read, and this platform "
            "does not allow them (ATELIER_ALLOW_PICKLED_MODELS): convert them to model.safetensors"
        )
    if not problem and weights.suffix.lower() in (".safetensors", ".bin"):  # an index (.json) names its shards
        try:
            model_file_check(weights.resolve(), PROMPTGEN_KIND)
        except InvalidField as refusal:
            problem = refusal.message
    name = folder.relative_to(base).as_posix()
    return PromptgenModelEntry(
        name=name, path=folder.resolve(), weights=weights.resolve(), sha256=cached_sha256(weights.resolve()),
        scope=scope, model_type=model_type, pickled=pickled, problem=problem,
    )


def _scan_promptgen(folder: Path, scope: str) -> list[PromptgenModelEntry]:
    if not folder.is_dir():
        return []
    root = folder.resolve()
    entries = []
    for config in sorted(folder.rglob("config.json")):
        model_folder = config.parent
        if not model_folder.resolve().is_relative_to(root) or model_folder.resolve() == root:
            continue  # a symlink out of the folder, or weights dropped in the folder itself
        entry = _promptgen_entry(model_folder, folder, scope)
        if entry is not None:
            entries.append(entry)
    return entries


def promptgen_entries_for_user(user: AbstractUser) -> list[PromptgenModelEntry]:
    """Every promptgen model folder the user may see (own, team, public), usable or not."""
    tenant = tenant_for_user(user)
    folders: list[tuple[Path, str]] = [(user_model_dir(user.get_username(), PROMPTGEN_KIND), "user")]
    if tenant is not None:
        folders.append((tenant_model_dir(tenant.slug, PROMPTGEN_KIND), "tenant"))
    folders.append((public_model_dir(PROMPTGEN_KIND), "public"))
    entries: list[PromptgenModelEntry] = []
    for folder, scope in folders:
        entries.extend(_scan_promptgen(folder, scope))
    return entries


def promptgen_models_for_user(user: AbstractUser) -> list[PromptgenModelEntry]:
    """The prompt-generation models the user may run: own first, then the team's, then public."""
    return [entry for entry in promptgen_entries_for_user(user) if not entry.problem]


def promptgen_resolve_for_user(user: AbstractUser, ident: str) -> PromptgenModelEntry:
    """A promptgen model by name, title or hash; `ModelNotFound` (field `model`) for one the user may
    not use, `InvalidField` for one that is there but cannot run (not a causal LM, pickled weights)."""
    from a1111.errors import InvalidField

    entries = promptgen_entries_for_user(user)
    for entry in entries:
        if entry.matches(ident):
            if entry.problem:
                raise InvalidField(f"prompt-generation model {entry.name!r} cannot be used: {entry.problem}", field=PROMPTGEN_FIELD)
            return entry
    if not entries:
        raise ModelNotFound(
            "no prompt-generation model is installed: put a causal language model folder (config.json, tokenizer "
            "files, model.safetensors; e.g. pai-bloom-1b1-text2prompt-sd) in your models/promptgen folder, or ask "
            "an operator to put one in the public one",
            field=PROMPTGEN_FIELD,
        )
    raise ModelNotFound(
        f"unknown prompt-generation model {ident!r}; GET /api/v1/promptgen/models lists the ones you may use",
        field=PROMPTGEN_FIELD,
    )


# --- a checkpoint's family, from its safetensors header (the refiner's latent-space check) -------

# The text-encoder key prefix that tells each family apart in an LDM/SGM single file, checked in order.
_FAMILY_MARKERS = (
    ("sdxl", "conditioner.embedders.1.model."),  # SDXL base: CLIP-L and OpenCLIP bigG
    ("sdxl-refiner", "conditioner.embedders.0.model."),  # SDXL refiner: OpenCLIP bigG alone
    ("sd2", "cond_stage_model.model."),  # OpenCLIP ViT-H
    ("sd1", "cond_stage_model.transformer."),  # CLIP ViT-L
)
FAMILY_TITLES = {
    "sdxl": "SDXL", "sdxl-refiner": "SDXL refiner", "sd2": "SD 2.x", "sd1": "SD 1.x", "": "unrecognised",
}
SDXL_LATENT_FAMILIES = ("sdxl", "sdxl-refiner")  # SDXL's VAE: one latent space


def checkpoint_family(path: Path) -> str:
    """"sdxl", "sdxl-refiner", "sd2" or "sd1" from the tensor names in a ``.safetensors`` header
    (no weight is read, no torch; the parse is `inference.model_files`' cached one); "" when the
    header cannot be read or matches none."""
    try:
        shapes = read_safetensors_header(path).shapes
    except (InvalidField, OSError):
        return ""
    for family, prefix in _FAMILY_MARKERS:
        if any(key.startswith(prefix) for key in shapes):
            return family
    return ""
