"""Issue #13 (LOW): one member cannot queue without limit, and a prompt cannot cost without limit."""

from __future__ import annotations

from tests.safetensors_files import write_placeholder_model
import pytest

from inference.models import Job

BODY = {"prompt": "a red bicycle", "steps": 4, "width": 64, "height": 64}


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


@pytest.mark.django_db
def test_queued_jobs_per_member_are_capped_with_a_429_naming_the_limit(api, settings) -> None:
    settings.ATELIER_MAX_QUEUED_JOBS_PER_USER = 3
    for _ in range(3):
        assert api("alice").post("/api/v1/jobs", BODY).status_code == 201
    refused = api("alice").post("/api/v1/jobs", BODY)
    assert refused.status_code == 429 and "ATELIER_MAX_QUEUED_JOBS_PER_USER=3" in refused.json()["error"]
    sdapi = api("alice").post("/sdapi/v1/txt2img", BODY)
    assert sdapi.status_code == 429 and "3" in sdapi.json()["detail"]
    assert Job.objects.filter(owner__username="alice").count() == 3
    assert api("bob").post("/api/v1/jobs", BODY).status_code == 201  # per member, not per tenant
    Job.objects.filter(owner__username="alice").update(status=Job.Status.SUCCEEDED)  # finished ones free room
    assert api("alice").post("/api/v1/jobs", BODY).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_prompt_of_too_many_chunks_is_refused_naming_its_field(api, field) -> None:
    body = {**BODY, field: "BREAK " * 1600}
    native = api("alice").post("/api/v1/jobs", body)
    assert native.status_code == 400 and native.json()["field"] == field
    assert "at most 16" in native.json()["error"]
    sdapi = api("alice").post("/sdapi/v1/txt2img", body)
    assert sdapi.status_code == 422 and sdapi.json()["body"] == field
    long_words = {**BODY, field: " ".join(["word"] * 75 * 17)}
    assert api("alice").post("/api/v1/jobs", long_words).status_code == 400
    assert not Job.objects.exists()
    fits = {**BODY, field: "a (red:1.2) bicycle BREAK " * 15}
    assert api("alice").post("/api/v1/jobs", fits).status_code == 201


def test_the_chunk_count_follows_a1111s_chunking() -> None:
    from a1111.prompts import prompt_chunk_count

    assert prompt_chunk_count("") == 1
    assert prompt_chunk_count("a cat") == 1
    assert prompt_chunk_count("a cat BREAK a dog") == 2
    assert prompt_chunk_count("BREAK " * 1600) == 1600
    assert prompt_chunk_count(" ".join(["word"] * 75)) == 1
    assert prompt_chunk_count(" ".join(["word"] * 76)) == 2


def test_the_chunk_count_never_exceeds_what_the_clip_tokenizer_makes(tmp_path) -> None:
    """A lower bound: a prompt that fits is never refused (checked against the real tokenizer)."""
    from a1111.prompts import prompt_chunk_count
    from runtime.conditioning import prompt_chunks
    from runtime.engine import WorkerRuntime
    from runtime.tiny.model import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache")
    tokenizer = runtime.pipelines.get(str(checkpoint), "tiny").tokenizer
    prompts = [
        "masterpiece, best quality, (a red bicycle:1.2) leaning on a wall, 8k, highly detailed, " * 6,
        "photo of a woman BREAK red dress BREAK city at night, bokeh, " * 3,
        "don't stop 1234567890 ;;;--- supercalifragilisticexpialidocious_zzqx " * 20,
        "日本語のプロンプト、猫と犬 " * 30,
        "a, " * 200,
    ]
    for prompt in prompts:
        assert prompt_chunk_count(prompt) <= len(prompt_chunks(tokenizer, prompt)), prompt[:40]


def test_many_lora_tags_make_a_bounded_network_key_not_a_500(api, personas) -> None:
    """Seven LoRA tags made a 566-character key, over its 500-character column: PostgreSQL
    refused the row and the API answered 500 (SQLite hid it). Long keys are now digests, and
    two jobs with the same networks still share one key (so they still batch)."""
    from django.conf import settings

    from inference.models import Job

    folder = settings.DATA_DIR / "users" / "alice" / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"style{index}" for index in range(9)]
    for name in names:
        write_placeholder_model(folder / f"{name}.safetensors", f"placeholder {name}")
    prompt = "a boat " + " ".join(f"<lora:{name}:0.{index + 1}>" for index, name in enumerate(names))
    body = {"prompt": prompt, "steps": 2, "width": 64, "height": 64}
    try:
        first, second = (api("alice").post("/api/v1/jobs", body) for _ in range(2))
        shorter = api("alice").post("/api/v1/jobs", {**body, "prompt": "a boat <lora:style0:0.5>"})
    finally:  # alice's LoRA folder is shared by later tests (test_access_rules lists it)
        for name in names:
            (folder / f"{name}.safetensors").unlink()
    assert first.status_code == 201, first.content
    assert second.status_code == 201, second.content
    keys = {job.network_key for job in Job.objects.filter(public_id__in=[first.json()["id"], second.json()["id"]])}
    [key] = keys
    assert key.startswith("sha256:") and len(key) <= Job._meta.get_field("network_key").max_length
    assert Job.objects.get(public_id=shorter.json()["id"]).network_key.endswith("@te=0.5,unet=0.5")  # short: readable
