"""Issue #13 (LOW): a failed job's error never shows a server path to the member."""

from __future__ import annotations

import pytest
from django.conf import settings

from inference.errors import member_error, scrub_paths


def test_absolute_paths_become_bare_file_names() -> None:
    message = (
        "generation failed: Error while deserializing header: checkpoint file for "
        "'/srv/atelier data/users/alice/models/Stable-diffusion/my model.safetensors' is truncated; "
        "also /opt/venv/lib/python3.11/site-packages/torch/serialization.py line 3, see https://example.com/a/b"
    )
    scrubbed = scrub_paths(message, ["/srv/atelier data"])
    assert "/srv" not in scrubbed and "alice" not in scrubbed and "/opt" not in scrubbed
    assert "'my model.safetensors' is truncated" in scrubbed and "serialization.py line 3" in scrubbed
    assert "https://example.com/a/b" in scrubbed  # URLs are not server paths
    assert scrub_paths("steps: must be at most 150, got 151") == "steps: must be at most 150, got 151"


def test_member_error_scrubs_the_data_and_model_folders() -> None:
    path = settings.DATA_DIR / "users" / "alice" / "models" / "Stable-diffusion" / "x.safetensors"
    public = settings.ATELIER_PUBLIC_MODEL_DIRS["Lora"] / "y.safetensors"
    scrubbed = member_error(f"cannot read '{path}' nor {public}")
    assert scrubbed == "cannot read 'x.safetensors' nor y.safetensors"


@pytest.mark.django_db(transaction=True)
def test_a_checkpoint_that_does_not_load_fails_the_job_without_naming_where_it_lives(personas, tiny_checkpoint_path) -> None:
    from tenants.workdirs import user_model_dir
    from tests.safetensors_files import safetensors_bytes

    folder = user_model_dir("alice", "Stable-diffusion")
    folder.mkdir(parents=True, exist_ok=True)
    broken = folder / "broken.safetensors"
    # A well-formed safetensors file (a truncated one is not even listed: inference/model_files.py)
    # whose tensors are no Stable Diffusion's: it fails on the worker, as it loads.
    broken.write_bytes(safetensors_bytes({"model.diffusion_model.input_blocks.0.0.weight": ("F32", (4, 4))}))
    try:
        _run_and_check(personas)
    finally:
        broken.unlink()  # it would be alice's default checkpoint in later tests


def _run_and_check(personas) -> None:
    from a1111.generation import parse_generation_request
    from inference.services import job_submit
    from tests.security.conftest import run_on_a_worker

    request = parse_generation_request({"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                        "override_settings": {"sd_model_checkpoint": "broken"}})
    job = job_submit(user=personas["alice"], request=request)
    run_on_a_worker([job], name="errors")
    assert job.status == "failed" and "broken.safetensors" in job.error, job.error
    assert str(settings.DATA_DIR) not in job.error and str(settings.DATA_DIR.resolve()) not in job.error
    assert "/users/" not in job.error and "/models/" not in job.error
