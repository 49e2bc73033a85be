"""Worker process lifecycle, hooked on Celery's signals (inactive in web processes).

* after setup: listen on this worker's own queue, `atelier.worker.<node name>`;
* when ready: register in the `Worker` table (which wakes the dispatcher; or stop at once, saying
  why, when another live process holds this worker's name: `WorkerNameTaken`), and start the heartbeat
  thread, which every few seconds reports the loaded checkpoints and held networks (one UPDATE
  of its own row: the scheduler's passes run in the dispatcher, `manage.py sweeper`, see
  `inference/dispatch.py`);
* every beat, touch the liveness file `manage.py probe worker --live` reads (`inference/health.py`);
* in cluster mode, a beat is written only while the broker answers a PING: a worker cut from
  Redis (but not from the database) cannot hear its queue, so it must not look alive to the
  dispatcher, which would keep sending it batches that wait until the dispatch timeout. Silent,
  it is declared dead after `ATELIER_WORKER_DEAD_AFTER_SECONDS` and its jobs re-run elsewhere;
  its first beat once Redis answers again brings it back online;
* on shutdown: stop the heartbeat, mark the worker offline and requeue what it held.
"""

from __future__ import annotations

import logging
import threading

from celery.exceptions import WorkerShutdown
from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from config.logcontext import log_context

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, worker_name: str) -> None:
        super().__init__(name="atelier-heartbeat", daemon=True)
        self.worker_name = worker_name
        self.stopping = threading.Event()

    def run(self) -> None:
        with log_context(worker=self.worker_name):  # its log lines name the worker (config/logcontext.py)
            self._beat()

    def _beat(self) -> None:
        from inference.health import check_broker, touch_heartbeat
        from inference.runner.batch import held_models, model_counters
        from inference.runner.tasks import run_batch
        from inference.transitions import worker_heartbeat

        touch_heartbeat("worker", self.worker_name)
        while not self.stopping.wait(settings.ATELIER_HEARTBEAT_SECONDS):
            # The liveness file (`manage.py probe worker --live`) says this loop runs, whatever the
            # database says: a database outage must not make Kubernetes restart every worker.
            touch_heartbeat("worker", self.worker_name)
            try:
                if settings.REDIS_URL:
                    check_broker()  # raises while this worker cannot reach its queue
                close_old_connections()
                runtime = run_batch.runtime
                worker_heartbeat(name=self.worker_name, loaded_models=held_models(runtime),
                                 cached_models=runtime.pipelines.cached(), active_networks=runtime.held_network_key(),
                                 model_counters=model_counters(runtime, run_batch.model_files))
            except Exception as exc:  # noqa: BLE001 - keep beating through a database or broker hiccup
                logger.warning("heartbeat not written (database or broker unreachable): %s", exc)


@celeryd_after_setup.connect
def listen_on_own_queue(sender: str, instance, **kwargs) -> None:
    from inference.dispatch import worker_queue_name

    instance.app.amqp.queues.select_add(worker_queue_name(sender))


@worker_ready.connect
def register(sender, **kwargs) -> None:
    name = sender.hostname
    with log_context(worker=name):
        _register(sender, name)


def _register(sender, name: str) -> None:
    from inference.runner.tasks import run_batch
    from inference.transitions import WorkerNameTaken, worker_register

    device, memory = run_batch.runtime.describe_device()
    try:
        worker_register(
            name=name, device=device, device_memory_bytes=memory, max_batch=settings.ATELIER_WORKER_MAX_BATCH
        )
    except WorkerNameTaken as exc:
        # Celery logs and swallows a handler's Exception; a WorkerShutdown (a SystemExit) stops
        # this worker before it takes a message. No heartbeat was set: the shutdown hook leaves
        # the other life's row and jobs alone.
        logger.critical("%s", exc)
        raise WorkerShutdown(str(exc)) from exc
    heartbeat = Heartbeat(name)
    sender.controller.atelier_heartbeat = heartbeat
    heartbeat.start()
    logger.info("worker %s ready on %s", name, device)  # `worker_register` woke the dispatcher


@worker_shutdown.connect
def unregister(sender, **kwargs) -> None:
    from inference.transitions import worker_stopped

    heartbeat = getattr(sender, "atelier_heartbeat", None)
    if heartbeat is None:
        return
    heartbeat.stopping.set()
    heartbeat.join(timeout=10)
    close_old_connections()
    worker_stopped(name=heartbeat.worker_name)
