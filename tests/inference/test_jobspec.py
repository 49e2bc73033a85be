"""The control plane → worker contract (`inference/jobspec.py`), its key resolution on a worker
(`inference/storage.py`) and the pure mapping to the runtime's spec (`execution.build_generation_spec`)."""

from __future__ import annotations

import dataclasses

import pytest
from django.conf import settings

from a1111.generation import ControlNetUnitRequest, GenerationRequest
from inference.jobspec import (
    FaceRestorerRef,
    JobSpec,
    JobSpecError,
    JobSpecVersionError,
    ModelRef,
    NetworkRef,
    UpscalerRef,
    member_params,
    member_params_from_json,
)
from inference.storage import UnsafeModelKey, model_file_key, model_file_path

CHECKPOINT = ModelRef("public/models/Stable-diffusion/tiny.safetensors", "c" * 64)
SECRET_SHA = "5" * 64  # the sha256 of a model file the member did not name


def _spec(**request) -> JobSpec:
    unit = ControlNetUnitRequest(model="lines", module="canny", image="users/alice/inputs/a.png", model_hash="abcd1234")
    return JobSpec(
        request=GenerationRequest(prompt="a boat <lora:ink:0.5>", seed=7, controlnet_units=[unit], restore_faces=True,
                                  hr_width=128, hr_height=128, hr_upscaler="R-ESRGAN 4x+", **request),
        checkpoint=CHECKPOINT,
        vae=ModelRef("tenants/studio-a/models/VAE/v.safetensors", "d" * 64),
        networks=(NetworkRef("lora", "ink", ModelRef("users/alice/models/Lora/ink.safetensors", SECRET_SHA), 0.5, 0.5),),
        upscaler=UpscalerRef("R-ESRGAN 4x+", ModelRef("public/models/ESRGAN/x4.pth", SECRET_SHA)),
        face_restorer=FaceRestorerRef("GFPGAN", ModelRef("public/models/GFPGAN/g.pth", SECRET_SHA),
                                      ModelRef("public/models/GFPGAN/detection_Resnet50_Final.pth", SECRET_SHA), 0.5),
        controlnet_models=(ModelRef("users/alice/models/ControlNet/lines.safetensors", SECRET_SHA),),
    )


def test_a_spec_survives_its_json_round_trip() -> None:
    spec = _spec()
    assert JobSpec.from_json(spec.to_json()) == spec
    assert spec.to_json()["version"] == 1 and spec.to_json()["prompt"] == "a boat <lora:ink:0.5>"


@pytest.mark.parametrize("version", [2, 99, "1", True, None, 0])
def test_a_spec_of_another_version_is_refused_with_a_message(version) -> None:
    data = {**_spec().to_json(), "version": version}
    with pytest.raises(JobSpecVersionError, match=r"job spec version .* reads versions 0, 1"):
        JobSpec.from_json(data)


@pytest.mark.parametrize("breakage", [
    lambda d: d.pop("models"),
    lambda d: d["models"].pop("checkpoint"),
    lambda d: d["models"]["networks"][0].pop("key"),
    lambda d: d["models"]["checkpoint"].update(key="/srv/atelier/public/models/x.safetensors"),
    lambda d: d["models"]["checkpoint"].update(key="public/../../etc/passwd"),
    lambda d: d["models"].update(controlnet=[]),
])
def test_a_malformed_spec_is_a_spec_error_not_a_crash(breakage) -> None:
    data = _spec().to_json()
    breakage(data)
    with pytest.raises(JobSpecError):
        JobSpec.from_json(data)


def test_the_member_view_is_the_request_by_allow_list() -> None:
    view = member_params(_spec())
    assert view["prompt"] == "a boat <lora:ink:0.5>" and view["hr_upscaler"] == "R-ESRGAN 4x+"
    assert view["face_restorer"] == {"name": "GFPGAN", "weight": 0.5}
    assert view["controlnet_units"][0]["model"] == "lines" and view["controlnet_units"][0]["model_hash"] == "abcd1234"
    shown = str(view)
    for hidden in (SECRET_SHA, "models/", "'networks'", "upscaler_model", "model_path", "model_sha256", "version"):
        assert hidden not in shown  # (the key: A1111's `disable_extra_networks` is a request field)
    assert member_params_from_json(_spec().to_json()) == view


def test_the_member_view_of_an_old_or_unknown_spec_still_hides_the_server_side() -> None:
    legacy = dataclasses.replace(
        _spec().request,
        networks=[{"kind": "lora", "name": "ink", "path": "/srv/x/ink.safetensors", "sha256": SECRET_SHA}],
        upscaler_model={"name": "R-ESRGAN 4x+", "path": "/srv/x/x4.pth", "sha256": SECRET_SHA},
        face_restorer={"name": "GFPGAN", "path": "/srv/x/g.pth", "sha256": SECRET_SHA, "detector_path": "/srv/x/d.pth",
                       "detector_sha256": SECRET_SHA, "weight": 0.5},
    ).to_json()
    legacy["controlnet_units"][0].update(model_path="/srv/x/lines.safetensors", model_sha256=SECRET_SHA)
    for data in (legacy, {**_spec().to_json(), "version": 7}):
        view = member_params_from_json(data)
        assert view["prompt"] == "a boat <lora:ink:0.5>" and view["face_restorer"] == {"name": "GFPGAN", "weight": 0.5}
        assert "/srv" not in str(view) and SECRET_SHA not in str(view) and "models/" not in str(view)


def test_model_keys_resolve_on_this_machine_and_never_outside_their_folder(tmp_path) -> None:
    lora_dir = settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"]
    assert model_file_path("public/models/Lora/styles/ink.safetensors") == (lora_dir / "styles" / "ink.safetensors").resolve()
    assert model_file_path("users/alice/models/Lora/ink.safetensors") == (
        settings.DATA_DIR / "users" / "alice" / "models" / "Lora" / "ink.safetensors"
    ).resolve()
    assert model_file_key(lora_dir / "styles" / "ink.safetensors") == "public/models/Lora/styles/ink.safetensors"
    for key in ("../secret_key", "users/../../etc/passwd", "/etc/passwd", "cache/x.bin", "users/alice", "users\\a\\b"):
        with pytest.raises(UnsafeModelKey):
            model_file_path(key)
    with pytest.raises(UnsafeModelKey):
        model_file_key(tmp_path / "elsewhere.safetensors")
    # a link in a member's folder that leads out of DATA_DIR is refused, not followed
    folder = settings.DATA_DIR / "users" / "mallory" / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "out").symlink_to(tmp_path, target_is_directory=True)
    try:
        with pytest.raises(UnsafeModelKey):
            model_file_path("users/mallory/models/Lora/out/x.safetensors")
    finally:
        (folder / "out").unlink()


def test_the_runtime_spec_is_a_pure_mapping_of_the_members_specs() -> None:
    from inference.runner.batch import MemberInputs, MemberPart, build_generation_spec

    plain = {"hr_width": 0, "hr_height": 0, "hr_upscaler": "Latent", "restore_faces": False}
    alice = JobSpec(request=GenerationRequest(prompt="a boat <lora:ink:0.5>", n_iter=2, steps=4, **plain),
                    checkpoint=CHECKPOINT,
                    networks=(NetworkRef("lora", "ink", ModelRef("users/alice/models/Lora/ink.safetensors", "e" * 64)),))
    charlie = JobSpec(request=GenerationRequest(prompt="a cat", steps=4, **plain), checkpoint=CHECKPOINT,
                      networks=alice.networks)
    parts = [
        MemberPart(alice, seeds=(10, 11), images=range(2), chunks=range(1)),
        MemberPart(charlie, seeds=(20,), images=range(2, 3), chunks=range(1, 2)),
    ]
    spec = build_generation_spec(parts, max_batch=2, inputs=[MemberInputs(), MemberInputs()],
                                 local_path=lambda ref: f"/mnt/worker-7/{ref.key}")
    assert spec.checkpoint_path == "/mnt/worker-7/public/models/Stable-diffusion/tiny.safetensors"
    assert spec.prompts == ["a boat ", "a boat ", "a cat"]  # the tags are instructions, not words
    assert spec.seeds == [10, 11, 20] and spec.steps == 4 and spec.max_batch == 2
    assert [(lora.path, lora.sha256) for lora in spec.loras] == [("/mnt/worker-7/users/alice/models/Lora/ink.safetensors", "e" * 64)]
    assert spec.preview_images == (0, 2)  # each job's first image of each chunk it spans
    assert spec.hires is None and spec.face_restoration is None and spec.controlnet == []
