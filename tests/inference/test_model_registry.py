"""The registry lists only files that pass `inference.model_files.model_file_check`: a fake
`.safetensors` or a pickle not allowed for its kind is left out of every list (and so cannot be
named by a job), logged once; `/api/v1/models` shows each checkpoint's architecture and size."""

from __future__ import annotations

import logging
import os
import pickle
import shutil

import pytest
from django.conf import settings as django_settings

from inference.model_registry import model_list_for_user, promptgen_entries_for_user
from tenants.workdirs import user_model_dir
from tests.safetensors_files import write_placeholder_model, write_safetensors

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_models(personas):
    made = []

    def place(kind: str, name: str):
        path = user_model_dir("alice", kind) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        made.append(path)
        return path

    yield place
    for path in made:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class _Exploit:
    def __init__(self, target) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _names(user, kind: str) -> list[str]:
    return [e.name for e in model_list_for_user(user, kind) if e.scope == "user"]


def test_a_fake_safetensors_file_is_not_listed_and_is_logged_once(personas, alice_models, caplog) -> None:
    write_placeholder_model(alice_models("Lora", "real.safetensors"))
    alice_models("Lora", "fake.safetensors").write_bytes(b"<html>not a model</html>")
    caplog.set_level(logging.WARNING, logger="inference.model_registry")
    for _ in range(3):  # (other tests' files may be in alice's folder too: only these two matter)
        names = _names(personas["alice"], "Lora")
        assert "real.safetensors" in names and "fake.safetensors" not in names
    warnings = [r.getMessage() for r in caplog.records if "fake.safetensors" in r.getMessage()]
    assert len(warnings) == 1 and "not a valid safetensors file" in warnings[0]


def test_a_refused_lora_cannot_be_named_by_a_job(api, alice_models, tiny_checkpoint_path) -> None:
    alice_models("Lora", "fake.safetensors").write_bytes(b"\0" * 64)
    response = api("alice").post("/api/v1/jobs", {"prompt": "a boat <lora:fake:0.5>", "steps": 2, "width": 64, "height": 64})
    assert response.status_code in (400, 404, 422) and "fake" in response.json()["error"]


def test_pickled_embeddings_and_hypernetworks_are_listed_only_when_the_operator_allows(
    personas, alice_models, settings, tmp_path
) -> None:
    import torch

    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "name": "style"}, alice_models("embeddings", "style.pt"))
    torch.save({768: [{"linear.0.weight": torch.zeros(2, 2)}], "name": "hn"}, alice_models("hypernetworks", "hn.pt"))
    target = tmp_path / "pwned"
    alice_models("embeddings", "evil.pt").write_bytes(pickle.dumps({"x": _Exploit(target)}))
    settings.ATELIER_ALLOW_PICKLED_MODELS = False
    assert _names(personas["alice"], "embeddings") == [] and _names(personas["alice"], "hypernetworks") == []
    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    assert _names(personas["alice"], "embeddings") == ["style.pt"]  # the malicious one never is
    assert _names(personas["alice"], "hypernetworks") == ["hn.pt"]
    assert not target.exists()


def test_upscaler_pth_files_are_listed_by_default_but_not_a_malicious_one(personas, alice_models, settings, tmp_path) -> None:
    import torch

    settings.ATELIER_ALLOW_PICKLED_MODELS = False
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(2)}}, alice_models("ESRGAN", "4x-mine.pth"))
    target = tmp_path / "pwned"
    torch.save({"params_ema": _Exploit(target)}, alice_models("ESRGAN", "4x-evil.pth"))
    assert _names(personas["alice"], "ESRGAN") == ["4x-mine.pth"]
    assert not target.exists()


def test_a_ckpt_checkpoint_is_never_listed(personas, alice_models, settings) -> None:
    import torch

    for allowed in (False, True):
        settings.ATELIER_ALLOW_PICKLED_MODELS = allowed
        torch.save({"state_dict": {}}, alice_models("Stable-diffusion", "old.ckpt"))
        assert "old.ckpt" not in _names(personas["alice"], "Stable-diffusion")


def test_a_promptgen_folder_with_a_malicious_bin_stays_unusable_when_pickles_are_allowed(
    personas, alice_models, settings, tmp_path
) -> None:
    folder = alice_models("promptgen", "evil-gpt2")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    target = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _Exploit(target)}))
    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    [entry] = [e for e in promptgen_entries_for_user(personas["alice"]) if e.name == "evil-gpt2"]
    assert "could run code" in entry.problem
    assert not target.exists()


def test_api_models_shows_architecture_size_and_format_to_the_owner_only(api, alice_models, tiny_checkpoint_path) -> None:
    mine = alice_models("Stable-diffusion", "mine-xl.safetensors")
    write_safetensors(mine, {
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": ("U8", (2, 2048)),
        "conditioner.embedders.1.model.token_embedding.weight": ("U8", (2,)),
    })
    models = {m["model_name"]: m for m in api("alice").get("/api/v1/models").json()["models"]}
    assert models["mine-xl"]["architecture"] == "sdxl" and models["mine-xl"]["architecture_title"] == "SDXL"
    assert models["mine-xl"]["size"] == mine.stat().st_size and models["mine-xl"]["format"] == "safetensors"
    tiny = models[tiny_checkpoint_path.stem]
    assert (tiny["architecture"], tiny["scope"]) == ("sd1", "public")
    for other in ("bob", "charlie"):
        assert "mine-xl" not in {m["model_name"] for m in api(other).get("/api/v1/models").json()["models"]}
    sd_models = api("alice").get("/sdapi/v1/sd-models").json()
    assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(sd_models[0])
    assert str(django_settings.DATA_DIR) not in str(models)
