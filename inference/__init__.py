"""Jobs and their lifecycle, dispatch, the Celery tasks, the worker runtime and the APIs."""
