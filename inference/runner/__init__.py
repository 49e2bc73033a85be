"""The Celery side of the control plane: the task, the worker-process lifecycle, running a batch and an Extras job on the runtime."""
