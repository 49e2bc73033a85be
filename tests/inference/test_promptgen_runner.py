"""The promptgen runner (`inference/runner/promptgen.py`) in-process: real database, real tiny
language models, the jobs submitted through `promptgen_submit` and run with `batch_execute` as a
worker process runs them (`tests/security/conftest.py` `run_on_a_worker`).

A runtime subclass only steps in where a test must act at a given moment of the run (the owner
presses cancel at a token step); it never replaces the generation itself.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from a1111.promptgen import parse_promptgen_request
from inference.models import Job, Worker
from inference.services import job_cancel, promptgen_submit
from runtime.engine import WorkerRuntime
from runtime.promptgen import PromptgenRuntime
from tenants.models import UsageRecord
from tests.security.conftest import run_on_a_worker

# the progress reporter threads write through their own connections
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _models(tiny_promptgen_models):
    return tiny_promptgen_models


def _submit(personas, user: str, **fields) -> Job:
    body = {"prompt": "a cat", "model": "atelier-tiny-bloom", "seed": 3, "num_results": 2, "max_length": 8, **fields}
    return promptgen_submit(user=personas[user], request=parse_promptgen_request(body))


def _runtime() -> WorkerRuntime:
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)


def test_two_members_expansions_run_as_one_batch_each_billed_for_its_share(personas) -> None:
    alices = _submit(personas, "alice", num_results=3)
    charlies = _submit(personas, "charlie", prompt="a castle", seed=9, temperature=0.5, max_length=5)
    assert alices.batch_key == charlies.batch_key and alices.model_key == charlies.model_key
    runtime = _runtime()
    run_on_a_worker([alices, charlies], name="pg-batch", runtime=runtime)
    assert (alices.status, charlies.status) == ("succeeded", "succeeded")
    assert len(alices.texts) == 3 and len(charlies.texts) == 2
    assert alices.progress == 1.0 and alices.total_steps == 8 and charlies.total_steps == 5
    assert alices.outputs == [] and alices.batch_id == charlies.batch_id
    usage = {record.user.username: record for record in UsageRecord.objects.all()}
    assert (usage["alice"].texts, usage["alice"].images, usage["charlie"].texts) == (3, 0, 2)
    assert usage["alice"].gpu_seconds == pytest.approx(alices.gpu_seconds)
    assert alices.gpu_seconds == pytest.approx(charlies.gpu_seconds * 3 / 2)  # the batch's time, shared by row
    # the worker reports the language model it holds, for affinity
    worker = Worker.objects.get(name="w@pg-batch")
    assert alices.model_key in worker.loaded_models

    # the same request alone, again: the same texts (the seed is the job's)
    again = _submit(personas, "alice", num_results=3)
    run_on_a_worker([again], name="pg-again", runtime=runtime)
    assert again.texts == alices.texts


def test_the_texts_reach_the_owner_through_the_jobs_api(personas, api) -> None:
    job = _submit(personas, "alice", model="atelier-tiny-gpt2")
    run_on_a_worker([job], name="pg-api", runtime=_runtime())
    detail = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()
    assert detail["status"] == "succeeded" and detail["texts"] == job.texts and len(job.texts) == 2
    assert all(text.startswith("a cat") for text in job.texts)  # GPT-2 prompt models continue the prompt
    usage = api("alice").get("/api/v1/usage").json()
    assert usage["texts"] == 2 and usage["records"][0]["kind"] == "promptgen" and usage["records"][0]["texts"] == 2


def test_a_cancelled_expansion_is_dropped_while_the_other_succeeds(personas) -> None:
    alices = _submit(personas, "alice", max_length=40, temperature=3.0, top_k=0)
    bobs = _submit(personas, "bob", max_length=6)

    class AliceCancelsAtTheFirstToken(WorkerRuntime):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            outer = self.promptgen

            class Cancelling(PromptgenRuntime):
                def expand(self, spec, on_step=None):
                    def step(done: int):
                        if done == 1:
                            job_cancel(job=Job.objects.get(pk=alices.pk))  # the owner presses cancel
                            # the progress writer notices at its next write: wait for it, as a slow step would
                            while not on_step(done):
                                import time

                                time.sleep(0.01)
                        return on_step(done)

                    return super().expand(spec, on_step=step)

            self.promptgen = Cancelling(device=outer.device, dtype=outer.dtype)

    run_on_a_worker([alices, bobs], name="pg-cancel",
                    runtime=AliceCancelsAtTheFirstToken(device="cpu", cache_size=1,
                                                        config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR))
    assert (alices.status, alices.texts) == ("cancelled", [])
    assert bobs.status == "succeeded" and len(bobs.texts) == 2
    assert UsageRecord.objects.get(job=alices).texts == 0


def test_a_model_folder_removed_after_submit_fails_the_job_with_a_message(personas, tiny_promptgen_models, tmp_path) -> None:
    import shutil

    from tenants.workdirs import user_model_dir

    folder = user_model_dir("alice", "promptgen") / "short-lived"
    shutil.copytree(tiny_promptgen_models["gpt2"], folder)
    job = _submit(personas, "alice", model="short-lived")
    shutil.rmtree(folder)
    run_on_a_worker([job], name="pg-gone", runtime=_runtime())
    assert job.status == "failed" and "prompt expansion failed" in job.error
    assert str(settings.DATA_DIR) not in job.error
