"""Jobs, GPU workers, the model-hash cache and the published model blobs.

A Job's status moves only forward, by compare-and-set updates in `inference/services.py`:

    queued → dispatched → running → succeeded | failed | cancelled
       ↑_________|___________|  (requeued when its worker dies: free while only dispatched,
                                  up to the attempt cap of started attempts once running)
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def new_job_id() -> str:
    return "j_" + secrets.token_urlsafe(12)


def new_job_group_id() -> str:
    return "g_" + secrets.token_urlsafe(12)


class JobGroup(models.Model):
    """Jobs submitted together as one piece of work: an X/Y/Z plot's cells (`inference/job_groups.py`).

    The cells are ordinary jobs (`Job.group`, `Job.group_index`): scheduled, metered and
    cancelled like any other. `finished_at` is set, and the grid stored, exactly once, when the
    last cell has ended (`job_group_settle`).
    """

    class Kind(models.TextChoices):
        XYZ = "xyz", "X/Y/Z plot"

    public_id = models.CharField(max_length=32, unique=True, default=new_job_group_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="job_groups")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="job_groups")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.XYZ)
    spec = models.JSONField(help_text="The plot's axes as parsed (a1111.xyz.XyzPlot.to_json).")
    grid_output = models.CharField(
        max_length=1000, blank=True, help_text="Storage key of the grid PNG, once every cell has ended."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.kind})"


class Worker(models.Model):
    class State(models.TextChoices):
        ONLINE = "online", "Online"
        DRAINING = "draining", "Draining (finishes its jobs, takes no new ones)"
        DISABLED = "disabled", "Disabled by an operator"
        OFFLINE = "offline", "Offline (stopped cleanly)"
        DEAD = "dead", "Dead (missed its heartbeats)"

    name = models.CharField(max_length=200, unique=True, help_text="Celery node name, e.g. gpu0@host")
    queue = models.CharField(max_length=220, unique=True)
    host = models.CharField(max_length=200, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    device = models.CharField(max_length=100, blank=True)
    device_memory_bytes = models.BigIntegerField(null=True, blank=True)
    slots = models.PositiveSmallIntegerField(default=1, help_text="Jobs it runs at once.")
    max_batch = models.PositiveSmallIntegerField(default=8)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ONLINE)
    loaded_models = models.JSONField(default=list, blank=True)  # checkpoint hashes on the device
    cached_models = models.JSONField(default=list, blank=True)  # in host RAM: a cheap load
    # The network key (Job.network_key) of the last batch it ran, while those networks are still
    # loaded in its cached pipeline: a job with the same key runs there without reading a file.
    active_networks = models.CharField(max_length=500, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField()
    jobs_done = models.PositiveIntegerField(default=0)
    # This life's model cache counters as the worker last reported them (`transitions.worker_heartbeat`):
    # checkpoint hits/loads/restores, promptgen_loads, blob_hits/fetches/fetched_bytes. Reset when a
    # new life registers; `/metrics` reads them as counters (inference/metrics.py).
    model_counters = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        DISPATCHED = "dispatched"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        TXT2IMG = "txt2img"
        IMG2IMG = "img2img"
        EXTRAS = "extras", "Extras (upscale, restore faces; no checkpoint)"
        PROMPTGEN = "promptgen", "Prompt expansion (BeautifulPrompt; a causal language model, no checkpoint)"
        INTERROGATE = "interrogate", "Interrogate (BLIP + CLIP caption, or danbooru tags; no checkpoint)"

    ACTIVE = (Status.QUEUED, Status.DISPATCHED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    public_id = models.CharField(max_length=32, unique=True, default=new_job_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TXT2IMG)
    params = models.JSONField(
        help_text="The validated request, A1111 field names: a GenerationRequest, or an ExtrasRequest for extras."
    )
    checkpoint_title = models.CharField(max_length=500)
    checkpoint_path = models.CharField(max_length=1000)
    checkpoint_sha256 = models.CharField(max_length=64)
    vae_title = models.CharField(max_length=500, blank=True, help_text="Empty: the checkpoint's own VAE.")
    vae_path = models.CharField(max_length=1000, blank=True)
    vae_sha256 = models.CharField(max_length=64, blank=True)
    # What the scheduler matches on (inference/scheduler/keys.py): the model that must be loaded
    # ("" for extras: none, any worker will do), the extra networks (LoRAs, hypernetworks,
    # embeddings), and the key of everything that must be equal for jobs to share one pipeline
    # batch. Extras jobs have no checkpoint_* either.
    model_key = models.CharField(max_length=200)
    network_key = models.CharField(max_length=500, blank=True)
    batch_key = models.CharField(max_length=64, db_index=True)
    priority = models.SmallIntegerField(default=0, help_text="Orders only this owner's own jobs; higher first.")
    batch_id = models.CharField(
        max_length=32, blank=True, db_index=True, help_text="Jobs dispatched together as one pipeline batch."
    )

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    # Two numbers (inference/reaping.py): `attempts` is the dispatch number, one more at every
    # dispatch and never reused (the token of the run_batch message and of the worker's
    # compare-and-set); `attempts_started` counts the dispatches a worker really claimed, and only
    # it is held against ATELIER_JOB_MAX_ATTEMPTS.
    attempts = models.PositiveIntegerField(
        default=0, help_text="The number of this job's latest dispatch (unique: never lowered or reused)."
    )
    attempts_started = models.PositiveSmallIntegerField(
        default=0, help_text="Attempts a worker really started (claimed); the attempt cap counts these."
    )
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    cancel_requested = models.BooleanField(default=False)
    skip_requested = models.PositiveIntegerField(
        default=0, help_text="Skips asked for while running (A1111's Skip): each drops the images being made then.",
    )
    error = models.TextField(blank=True)
    outputs = models.JSONField(default=list, blank=True, help_text="Storage keys of the images, in order.")
    seeds = models.JSONField(default=list, blank=True)
    infotexts = models.JSONField(default=list, blank=True)
    preview = models.TextField(
        blank=True, default="", help_text="While running: a live preview of the first image (base64 JPEG)."
    )
    censored = models.JSONField(
        default=list, blank=True, help_text="Positions in outputs the NSFW censor flagged; those images are blurred."
    )
    control_maps = models.JSONField(
        default=list, blank=True, help_text="Storage keys of the ControlNet detect maps (preprocessed control images)."
    )
    texts = models.JSONField(
        default=list, blank=True, help_text="Promptgen jobs: the expanded prompts, in the order generated; interrogate jobs: the caption."
    )
    gpu_seconds = models.FloatField(default=0.0)
    group = models.ForeignKey(JobGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    group_index = models.PositiveIntegerField(null=True, blank=True, help_text="The cell's place in its group.")

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["owner", "-created_at"]),
            # The queue in the dispatcher's order, only while queued (a few thousand entries, not
            # every job ever run): its window and its checksum (inference/dispatch_memory.py).
            models.Index(fields=["created_at", "id"], condition=models.Q(status="queued"), name="job_queued_order"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.kind}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class ModelFileHash(models.Model):
    """SHA-256 of a model file, remembered by (path, size, mtime) so it is computed once."""

    path = models.CharField(max_length=1000, unique=True)
    size = models.BigIntegerField()
    mtime_ns = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)


class ModelBlob(models.Model):
    """A model file (or a diffusers/transformers folder) published to the "models" object storage
    by its sha256 (`inference/model_blobs.py`): workers on other machines fetch it from there.
    A row exists only once every file of the blob is stored, so a submit whose models all have
    rows costs one query and uploads nothing."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()  # bytes, all files together
    files = models.JSONField(default=list, blank=True)  # a folder's relative paths; [] for one file
    stored_at = models.DateTimeField(auto_now_add=True)


class UserOptions(models.Model):
    """A member's own WebUI options (A1111's /sdapi/v1/options, never global)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webui_options")
    values = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"options of {self.user}"


# The EAS queue service's rows live in their own module; imported here so the app registers them.
from inference.eas.models import EasConsumer, EasItem, EasService, EasServiceToken  # noqa: F401


def new_model_download_id() -> str:
    return "md_" + secrets.token_urlsafe(12)


class ModelDownload(models.Model):
    """A model an operator (or a tenant admin, into their team's folder) registered by URL
    (`inference/model_downloads.py`): downloaded in the background by the sweeper's downloader
    thread, verified, and placed in a public or team model folder. Its state moves forward only:

        queued → downloading → verifying → done | failed | cancelled
           ↑________ retry (from failed or cancelled) ___|
    """

    class Area(models.TextChoices):
        PUBLIC = "public", "public (every tenant)"
        TEAM = "team", "a team's shared folder"

    class State(models.TextChoices):
        QUEUED = "queued"
        DOWNLOADING = "downloading"
        VERIFYING = "verifying"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    public_id = models.CharField(max_length=32, unique=True, default=new_model_download_id, editable=False)
    url = models.URLField(max_length=2000, help_text="http(s); private addresses only for hosts on "
                          "ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS (internal mirrors).")
    area = models.CharField(max_length=8, choices=Area.choices, default=Area.PUBLIC)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True,
                               related_name="model_downloads", help_text="The team, for the team area.")
    kind = models.CharField(max_length=32, help_text="The model folder: Stable-diffusion, Lora, VAE, …")
    file_name = models.CharField(max_length=255, help_text="The name the file gets in its folder.")
    sha256 = models.CharField(max_length=64, blank=True, default="",
                              help_text="The expected SHA-256 (64 hex digits): recommended; a mismatch fails the download.")
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True, help_text="From Content-Length, when sent.")
    actual_sha256 = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    runner = models.CharField(max_length=200, blank=True, default="", help_text="The process downloading it.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                   related_name="model_downloads")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)  # the downloader's heartbeat while downloading
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.state})"
