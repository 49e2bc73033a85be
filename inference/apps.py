from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery worker signals: registration, own queue, heartbeat (no-ops in the web process).
        from inference.runner import lifecycle  # noqa: F401 - connects the Celery worker signals
