"""Structured logs and the model cache counters (issue 18, item 5), on real components.

* `config/logcontext.py`: the JSON formatter writes one valid JSON object per line with the job,
  batch and worker fields; a real batch run in-process (`batch_execute`, the tiny model) logs
  records that carry its job id and its worker's name.
* A worker process's model counters: two batches on one checkpoint are one load and one hit, in
  the worker's row (`Worker.model_counters`) and in `/metrics`.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from a1111.generation import parse_generation_request
from config.logcontext import ContextFilter, JsonFormatter, PlainFormatter, log_context
from inference.models import Job, Worker
from inference.runner.batch import batch_execute
from inference.services import job_submit
from runtime.engine import WorkerRuntime

METRICS_TOKEN = "observability-test-token-" + "z" * 24


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every record at INFO and above, as `LOG_FORMAT=json` writes it (the settings' filter and formatter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is one JSON object


def _record(message: str, *, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("atelier.test", logging.ERROR, __file__, 1, message, (), exc_info)


def test_the_json_formatter_writes_one_object_per_line_with_the_context_fields() -> None:
    formatter, context = JsonFormatter(), ContextFilter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        failure = _record("it broke\non two lines", exc_info=sys.exc_info())
    with log_context(worker="gpu0@h", job=["j_a", "j_b"], batch="b1"):
        context.filter(failure)
    plain = _record("no context")
    context.filter(plain)
    lines = (formatter.format(failure) + "\n" + formatter.format(plain)).splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "it broke\non two lines" and first["level"] == "ERROR" and first["logger"] == "atelier.test"
    assert "ValueError: bad" in first["exception"] and first["time"].endswith("+00:00")
    assert (first["worker"], first["job"], first["batch"]) == ("gpu0@h", "j_a,j_b", "b1")
    assert "worker" not in second and "job" not in second and "exception" not in second  # outside any block: none


def test_the_plain_format_shows_the_fields_when_set_and_blocks_restore_the_outer_ones() -> None:
    formatter, context = PlainFormatter("%(levelname)s %(name)s: %(message)s"), ContextFilter()
    with log_context(worker="gpu0@h"):
        with log_context(job="j_abc"):
            inner = _record("inner")
            context.filter(inner)
        outer = _record("outer")
        context.filter(outer)
    assert formatter.format(inner) == "ERROR atelier.test: inner [worker=gpu0@h job=j_abc]"
    assert formatter.format(outer) == "ERROR atelier.test: outer [worker=gpu0@h]"


def test_the_settings_pick_the_format_from_log_format() -> None:
    assert settings.LOG_FORMAT in ("plain", "json")
    handler = settings.LOGGING["handlers"]["console"]
    assert handler["formatter"] == settings.LOG_FORMAT and handler["filters"] == ["context"]
    assert settings.LOGGING["formatters"]["json"]["()"] == "config.logcontext.JsonFormatter"


# --- a real batch -----------------------------------------------------------------------------


def _submit(user, seed: int) -> Job:
    body = {"prompt": "a lighthouse", "seed": seed, "steps": 2, "width": 64, "height": 64}
    return job_submit(user=user, request=parse_generation_request(body))


def _worker(name: str) -> Worker:
    return Worker.objects.create(name=name, queue=f"q.{name}", last_heartbeat=timezone.now())


def _run(job: Job, worker: Worker, runtime: WorkerRuntime, *, batch_id: str) -> None:
    """Dispatch `job` to `worker` as the dispatcher does (a batch id, dispatch number 1), then run it."""
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1, batch_id=batch_id)
    batch_execute(jobs=[(job.public_id, 1)], worker_name=worker.name, runtime=runtime)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error


def _runtime() -> WorkerRuntime:
    return WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=settings.ATELIER_MODEL_CACHE_DIR)


@pytest.mark.django_db(transaction=True)  # the progress reporter threads write through their own connections
def test_a_batch_s_log_records_carry_its_job_batch_and_worker(personas, tiny_checkpoint_path, json_log) -> None:
    job = _submit(personas["alice"], 7)
    worker = _worker(f"logs-{uuid.uuid4().hex[:6]}@h")
    _run(job, worker, _runtime(), batch_id="b" * 16)
    during = [line for line in _lines(json_log) if line.get("job") == job.public_id]
    messages = " | ".join(line["message"] for line in during)
    assert f"job {job.public_id} attempt 1 started on {worker.name}" in messages  # the claim's line
    assert any(line["message"].startswith("loaded ") for line in during), messages  # the runtime's own line
    assert all(line["worker"] == worker.name and line["batch"] == "b" * 16 for line in during), during
    assert all({"time", "level", "logger", "message"} <= set(line) for line in during)


@pytest.mark.django_db(transaction=True)
def test_two_batches_on_one_checkpoint_are_one_load_and_one_hit_in_the_row_and_in_metrics(
    client, settings, personas, tiny_checkpoint_path
) -> None:
    worker = _worker(f"cache-{uuid.uuid4().hex[:6]}@h")
    runtime = _runtime()  # the worker process's: kept between its batches
    _run(_submit(personas["alice"], 1), worker, runtime, batch_id="1" * 16)
    _run(_submit(personas["charlie"], 2), worker, runtime, batch_id="2" * 16)
    worker.refresh_from_db()
    counters = worker.model_counters
    assert (counters["loads"], counters["hits"], counters["restores"]) == (1, 1, 0), counters
    assert counters["blob_fetches"] == 0  # no blob store here: the models are on this machine

    settings.ATELIER_METRICS_TOKEN = METRICS_TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}
    labels = (("worker", worker.name),)
    assert samples[("atelier_model_loads_total", labels)] == 1
    assert samples[("atelier_model_cache_hits_total", labels)] == 1
    assert samples[("atelier_model_blob_fetches_total", labels)] == 0
    assert samples[("atelier_model_blob_fetched_bytes_total", labels)] == 0


def test_a_log_format_that_is_not_one_stops_the_process_saying_what_to_write() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", "import config.settings"], env=env, capture_output=True, text=True,
                            cwd=settings.BASE_DIR, check=False)
    assert result.returncode != 0
    assert "LOG_FORMAT='xml': expected one of plain, json" in result.stderr
