"""The one contract between the control plane and a worker: `JobSpec`, typed and versioned (pure).

`job_submit` validates a request, resolves every model it names to a file the member may use,
and stores a `JobSpec` in `Job.params`; a worker, possibly on another machine and another
release, reads it back with `JobSpec.from_json`. So the spec holds exactly what a worker needs
and nothing that only makes sense on the machine that wrote it:

- the request as the member validated it (`GenerationRequest`, A1111 field names), with the
  fields `job_submit` used to carry resolved files (`networks`, `upscaler_model`,
  `face_restorer`, a ControlNet unit's `model_path`/`model_sha256`) left empty: those files are
- `ModelRef`s: STORAGE-RELATIVE keys (`public/models/Lora/x.safetensors`,
  `tenants/<t>/models/…`, `users/<u>/models/…`, relative to `DATA_DIR`, the public folders
  mapped by kind) plus the file's sha256. A worker resolves a key on its own machine
  (`inference/storage.py` `model_file_path`), wherever it mounts `DATA_DIR`.

The JSON is the request's fields at the top level (so readers of plain request fields, such as
the scheduler's step count, need no change), plus `version` and `models`. A version this code
does not know is refused with `JobSpecVersionError`, a message for the job's owner, instead of
a worker crashing on a shape it cannot read. Version 0 is the format before this module: the
request with absolute paths, read by `JobSpec.from_legacy` with a path→key function.

What a member may see of their own job is built by allow-list in `member_params`, never by
deleting server-side keys from the stored dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from a1111.generation import ControlNetUnitRequest, GenerationRequest

JOB_SPEC_VERSION = 1
READABLE_VERSIONS = (0, JOB_SPEC_VERSION)
KEY_ROOTS = ("public", "tenants", "users")  # the first segment of every model key


class JobSpecError(ValueError):
    """A stored spec this worker cannot run; the message is for the job's owner."""


class JobSpecVersionError(JobSpecError):
    """The spec was written by a control plane of another version than this worker reads."""


def check_model_key(key: str) -> str:
    """`key` if it is a plain storage-relative model key (no absolute path, no `..`), else JobSpecError."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or parts[0] not in KEY_ROOTS
        or any(part in ("", ".", "..") for part in parts)
        or len(parts) < 3
    ):
        raise JobSpecError(f"{key!r} is not a model key (expected e.g. public/models/Lora/name.safetensors)")
    return key


@dataclass(frozen=True)
class ModelRef:
    """One model file: its storage-relative key and its sha256 (what caches and batch keys match on)."""

    key: str
    sha256: str

    def __post_init__(self) -> None:
        check_model_key(self.key)

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any, where: str) -> ModelRef:
        if not isinstance(data, Mapping) or not isinstance(data.get("key"), str) or not isinstance(data.get("sha256"), str):
            raise JobSpecError(f"the job's {where} model reference is malformed")
        return cls(key=data["key"], sha256=data["sha256"])


@dataclass(frozen=True)
class NetworkRef:
    """A `<lora:…>`, `<hypernet:…>` tag or a textual-inversion embedding, resolved to its file."""

    kind: str  # "lora", "hypernet" or "embedding"
    name: str  # as the prompt names it
    model: ModelRef
    te_weight: float = 1.0
    unet_weight: float = 1.0


@dataclass(frozen=True)
class UpscalerRef:
    """A hires-fix model upscaler (ESRGAN family) named by `hr_upscaler`."""

    name: str
    model: ModelRef


@dataclass(frozen=True)
class FaceRestorerRef:
    """"Restore faces": the restorer A1111 names, its file, facexlib's detector file and the weight."""

    name: str
    model: ModelRef
    detector: ModelRef
    weight: float


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to run one generation job (see the module docstring)."""

    request: GenerationRequest
    checkpoint: ModelRef
    vae: ModelRef | None = None
    networks: tuple[NetworkRef, ...] = ()
    upscaler: UpscalerRef | None = None
    face_restorer: FaceRestorerRef | None = None
    controlnet_models: tuple[ModelRef, ...] = ()  # one per `request.controlnet_units`, in order
    refiner: ModelRef | None = None  # `request.refiner_checkpoint` resolved (None when it never runs)
    # `request.hr_checkpoint_name` resolved: the hires pass's own checkpoint (None: the first pass's)
    hires_checkpoint: ModelRef | None = None
    version: int = JOB_SPEC_VERSION

    def __post_init__(self) -> None:
        if len(self.controlnet_models) != len(self.request.controlnet_units):
            raise JobSpecError("the job names a different number of ControlNet models than units")

    def to_json(self) -> dict[str, Any]:
        def ref(value: ModelRef | None) -> dict[str, str] | None:
            return value.to_json() if value is not None else None

        return {
            **without_resolved_files(self.request).to_json(),
            "version": self.version,
            "models": {
                "checkpoint": self.checkpoint.to_json(),
                "vae": ref(self.vae),
                "networks": [
                    {"kind": n.kind, "name": n.name, **n.model.to_json(), "te_weight": n.te_weight, "unet_weight": n.unet_weight}
                    for n in self.networks
                ],
                "upscaler": {"name": self.upscaler.name, **self.upscaler.model.to_json()} if self.upscaler else None,
                "face_restorer": {
                    "name": self.face_restorer.name, **self.face_restorer.model.to_json(),
                    "detector": self.face_restorer.detector.to_json(), "weight": self.face_restorer.weight,
                } if self.face_restorer else None,
                "controlnet": [model.to_json() for model in self.controlnet_models],
                "refiner": ref(self.refiner),
                "hires_checkpoint": ref(self.hires_checkpoint),
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> JobSpec:
        """Read a stored version-1 spec; any other version is a `JobSpecVersionError`.

        (Version 0, a spec without `version`, needs the job's columns and a path→key function:
        `from_legacy`.)
        """
        if not isinstance(data, Mapping):
            raise JobSpecError("the job's stored spec is not an object")
        version = data.get("version", 0)
        if version != JOB_SPEC_VERSION or isinstance(version, bool):
            raise JobSpecVersionError(
                f"this job was queued in job spec version {version!r}, and this worker reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}: it was submitted to a control plane of another "
                "release than this worker's; submit it again once both run the same release"
            )
        models = data.get("models")
        if not isinstance(models, Mapping):
            raise JobSpecError("the job's stored spec has no model references")
        try:
            request = GenerationRequest.from_json(data)
            networks = tuple(
                NetworkRef(
                    kind=str(n["kind"]), name=str(n["name"]), model=ModelRef.from_json(n, f"{n['kind']} {n['name']!r}"),
                    te_weight=float(n["te_weight"]), unet_weight=float(n["unet_weight"]),
                )
                for n in models.get("networks") or ()
            )
            upscaler = models.get("upscaler")
            restorer = models.get("face_restorer")
            return cls(
                request=request,
                checkpoint=ModelRef.from_json(models.get("checkpoint"), "checkpoint"),
                vae=ModelRef.from_json(models["vae"], "VAE") if models.get("vae") else None,
                networks=networks,
                upscaler=UpscalerRef(str(upscaler["name"]), ModelRef.from_json(upscaler, "upscaler")) if upscaler else None,
                face_restorer=FaceRestorerRef(
                    name=str(restorer["name"]), model=ModelRef.from_json(restorer, "face restorer"),
                    detector=ModelRef.from_json(restorer.get("detector"), "face detector"), weight=float(restorer["weight"]),
                ) if restorer else None,
                controlnet_models=tuple(
                    ModelRef.from_json(model, f"ControlNet unit {index}")
                    for index, model in enumerate(models.get("controlnet") or ())
                ),
                refiner=ModelRef.from_json(models["refiner"], "refiner") if models.get("refiner") else None,
                hires_checkpoint=(
                    ModelRef.from_json(models["hires_checkpoint"], "hires checkpoint") if models.get("hires_checkpoint") else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, JobSpecError):
                raise
            raise JobSpecError(f"the job's stored spec is malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_legacy(
        cls, data: Mapping[str, Any], *, checkpoint: ModelRef, vae: ModelRef | None, key_of: Callable[[str], str]
    ) -> JobSpec:
        """A version-0 spec (the request with absolute server paths, the checkpoint and VAE in the
        job's columns) as version 1; `key_of` maps a path on this deployment to its model key."""
        request = GenerationRequest.from_json(data)
        return request_to_spec(request, checkpoint=checkpoint, vae=vae, key_of=key_of)


def without_resolved_files(request: GenerationRequest) -> GenerationRequest:
    """The request without the resolved-file fields `job_submit` fills (the spec's `ModelRef`s hold them)."""
    return dataclasses.replace(
        request,
        networks=[],
        upscaler_model=None,
        face_restorer=None,
        controlnet_units=[dataclasses.replace(unit, model_path="", model_sha256="") for unit in request.controlnet_units],
    )


def request_to_spec(
    request: GenerationRequest, *, checkpoint: ModelRef, vae: ModelRef | None, key_of: Callable[[str], str],
    refiner: ModelRef | None = None, hires_checkpoint: ModelRef | None = None,
) -> JobSpec:
    """The spec of a request whose files `job_submit` resolved (into its `networks`,
    `upscaler_model`, `face_restorer` and units' `model_path`), paths mapped to keys by `key_of`."""
    upscaler = request.upscaler_model
    restorer = request.face_restorer
    return JobSpec(
        request=without_resolved_files(request),
        checkpoint=checkpoint,
        vae=vae,
        networks=tuple(
            NetworkRef(
                kind=n["kind"], name=n["name"], model=ModelRef(key_of(n["path"]), n["sha256"]),
                te_weight=n["te_weight"], unet_weight=n["unet_weight"],
            )
            for n in request.networks
        ),
        upscaler=UpscalerRef(upscaler["name"], ModelRef(key_of(upscaler["path"]), upscaler["sha256"])) if upscaler else None,
        face_restorer=FaceRestorerRef(
            name=restorer["name"], model=ModelRef(key_of(restorer["path"]), restorer["sha256"]),
            detector=ModelRef(key_of(restorer["detector_path"]), restorer["detector_sha256"]), weight=restorer["weight"],
        ) if restorer else None,
        controlnet_models=tuple(
            ModelRef(key_of(unit.model_path), unit.model_sha256) for unit in request.controlnet_units
        ),
        refiner=refiner,
        hires_checkpoint=hires_checkpoint,
    )


# --- what a member may see of their own job -----------------------------------------------------

# The request fields a member sees back: what they (or their workspace) sent, validated. Anything
# not named here (resolved files, and whatever a later version adds) stays server-side until
# someone decides a member may see it.
MEMBER_REQUEST_FIELDS = tuple(
    name for name in GenerationRequest.__dataclass_fields__
    if name not in ("networks", "upscaler_model", "face_restorer", "controlnet_units")
)
MEMBER_CONTROLNET_FIELDS = tuple(
    name for name in ControlNetUnitRequest.__dataclass_fields__ if name not in ("model_path", "model_sha256")
)


def _request_view(request: GenerationRequest) -> dict[str, Any]:
    data = request.to_json()
    view = {name: data[name] for name in MEMBER_REQUEST_FIELDS}
    view["controlnet_units"] = [
        {name: unit[name] for name in MEMBER_CONTROLNET_FIELDS} for unit in data["controlnet_units"]
    ]
    return view


def member_params(spec: JobSpec) -> dict[str, Any]:
    """The job's parameters as its owner may read them (native API, workspace): the request's
    own fields, the ControlNet units without their files, the face restorer's name and weight.
    No server path, no storage key, no sha256 of a model the member did not name."""
    view = _request_view(spec.request)
    if spec.face_restorer is not None:
        view["face_restorer"] = {"name": spec.face_restorer.name, "weight": spec.face_restorer.weight}
    return view


def member_params_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """`member_params` of a stored spec of any version: a spec this code cannot read as a whole
    (version 0, or one from another release) still shows its request fields, by the same allow-list."""
    try:
        return member_params(JobSpec.from_json(data))
    except JobSpecError:
        pass
    view = _request_view(GenerationRequest.from_json({key: value for key, value in data.items() if key != "controlnet_units"}))
    units = data.get("controlnet_units")
    if isinstance(units, list):
        view["controlnet_units"] = [
            {name: unit.get(name) for name in MEMBER_CONTROLNET_FIELDS} for unit in units if isinstance(unit, Mapping)
        ]
    models = data.get("models")
    restorer = data.get("face_restorer") or (models.get("face_restorer") if isinstance(models, Mapping) else None)
    if isinstance(restorer, Mapping):
        view["face_restorer"] = {"name": restorer.get("name"), "weight": restorer.get("weight")}
    return view
