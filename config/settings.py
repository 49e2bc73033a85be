"""Atelier settings: every knob is read from the environment, in this one module.

Two ways to run, one code path:

* **Embedded default** (no environment set): SQLite under ``DATA_DIR``, Celery over
  kombu's file-system transport (a folder under ``DATA_DIR``), Channels' in-memory layer
  in the web process, and job events relayed from worker processes to the web process
  over loopback HTTP (see ``inference/events.py``). No server to install.
* **Cluster** (``DATABASE_URL`` and ``REDIS_URL`` set): PostgreSQL, Redis as the Celery
  broker, and Redis as the channel layer that workers publish job events to directly.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

# Owner-only permissions: the database, the secret key and every member's files live under
# DATA_DIR. Modes are set explicitly here (not with a umask) because every process imports
# this module -- daphne, Celery workers, `manage.py`, containers -- whoever started it, and a
# umask would also change the modes of files other components create on purpose.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _make_private(path: Path, mode: int) -> None:
    """Narrow ``path`` to ``mode`` if it is ours (a volume owned by someone else is left as is)."""
    try:
        if path.stat().st_uid == os.geteuid() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass


def _strict_bool(name: str, default: bool) -> bool:
    """A yes/no variable; anything but true/false/1/0/yes/no/on/off is a configuration error.

    (django-environ's ``env.bool`` reads every unknown word, a typo included, as false.)
    """
    raw = env.str(name, default="").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: expected true or false")


def _at_least(name: str, value: float, minimum: float) -> float:
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value}: must be at least {minimum}")
    return value


DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data"))).resolve()
DATA_DIR.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
_make_private(DATA_DIR, PRIVATE_DIR_MODE)


def _embedded_secret_key() -> str:
    """A key generated once per DATA_DIR, so web and worker processes share it."""
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        tmp = key_file.with_suffix(f".tmp{secrets.token_hex(4)}")
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        tmp.replace(key_file) if not key_file.exists() else tmp.unlink()
    _make_private(key_file, PRIVATE_FILE_MODE)
    return key_file.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _embedded_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "config.admin_site.AtelierAdminConfig",  # django.contrib.admin, with checked action selections
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "channels",
    "tenants",
    "inference",
    "frontend",
    "drf_spectacular_sidecar",  # static files only: Swagger UI for /docs, served from this site
]

MIDDLEWARE = [
    # First: /healthz, /readyz (and /metrics with a bearer token) answer before the host check and
    # the HTTPS redirect, which a kubelet or Prometheus calling the pod's own address would fail.
    "config.observability.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "config.security.RefuseNulCharactersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last of the working ones, as django-axes asks: turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
    # A sync-only no-op, innermost: the chain above runs in the request's one thread instead of
    # hopping between it and the event loop around each middleware (config/middleware.py).
    "config.middleware.SyncChainMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes share the file: WAL lets readers run beside the writer,
    # IMMEDIATE transactions take the write lock up front instead of failing to upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _sqlite_file = DATABASES["default"].get("NAME") or ""
    if _sqlite_file and _sqlite_file != ":memory:" and not _sqlite_file.startswith("file:"):
        # Create the file before SQLite does, owner-only; SQLite gives its -wal and -shm
        # files the database file's own mode. An existing file is narrowed on start.
        try:
            os.close(os.open(_sqlite_file, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
        except FileNotFoundError:
            pass  # its folder does not exist (yet): SQLite will say so when it connects
        for _suffix in ("", "-wal", "-shm", "-journal"):
            _make_private(Path(_sqlite_file + _suffix), PRIVATE_FILE_MODE)
else:
    # A pool of connections per process (psycopg_pool, through Django), not persistent ones: under
    # ASGI each request's sync code runs in a thread of its own, and a persistent connection is the
    # thread's, so every request (a submit, a PNG download, a websocket's authentication) opened a
    # new PostgreSQL connection (a server process forked, ~3-15 ms here) and left it to the garbage
    # collector. Django requires CONN_MAX_AGE 0 with a pool; health checks are done at checkout.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": int(_at_least("DATABASE_POOL_MAX_SIZE", env.int("DATABASE_POOL_MAX_SIZE", default=20), 1)),
        "timeout": 30.0,  # a checkout waits this long for a free connection before failing
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --- login throttling (django-axes: /login/ and /admin/login/) -------------------------
# API tokens are not passwords and never go through authenticate(): they are not throttled here.
AUTHENTICATION_BACKENDS = [
    "config.security.LoginThrottleBackend",  # refuses locked-out logins before any password check
    "django.contrib.auth.backends.ModelBackend",
]
ATELIER_LOGIN_FAILURE_LIMIT = int(_at_least(
    "ATELIER_LOGIN_FAILURE_LIMIT", env.int("ATELIER_LOGIN_FAILURE_LIMIT", default=10), 1
))
# 0: no cool-off, a locked-out account or address stays locked until an operator unlocks it.
ATELIER_LOGIN_COOLOFF_MINUTES = _at_least(
    "ATELIER_LOGIN_COOLOFF_MINUTES", env.float("ATELIER_LOGIN_COOLOFF_MINUTES", default=15.0), 0
)
AXES_FAILURE_LIMIT = ATELIER_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=ATELIER_LOGIN_COOLOFF_MINUTES) if ATELIER_LOGIN_COOLOFF_MINUTES else None


def _lockout_parameters(raw: str) -> list[str | list[str]]:
    """`username,ip_address` (each counted on its own) or `username+ip_address` (the pair)."""
    known = {"username", "ip_address", "user_agent"}
    parameters: list[str | list[str]] = []
    for item in (part.strip() for part in raw.split(",")):
        names = [name.strip() for name in item.split("+")]
        if not item or not set(names) <= known:
            raise ImproperlyConfigured(
                f"ATELIER_LOGIN_LOCKOUT_PARAMETERS={raw!r}: expected a comma-separated list of "
                "username, ip_address or combinations such as username+ip_address"
            )
        parameters.append(names[0] if len(names) == 1 else names)
    return parameters


# Default: an account is locked after the limit of failures from anywhere (a spread-out guess
# at one password), and an address after the limit of failures against any accounts.
AXES_LOCKOUT_PARAMETERS = _lockout_parameters(
    env.str("ATELIER_LOGIN_LOCKOUT_PARAMETERS", default="username,ip_address")
)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "frontend.views.login_locked_out"
# The client address is the connection's own (REMOTE_ADDR), never a header a client can forge.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
AXES_ENABLE_ADMIN = True  # operators see and delete lockouts in Django admin ("Axes")

# --- HTTPS and security headers ----------------------------------------------------------
# ATELIER_HTTPS=true is the production profile: redirect to HTTPS, secure cookies, HSTS for a
# year on subdomains too. Each of those can still be set on its own.
ATELIER_HTTPS = _strict_bool("ATELIER_HTTPS", default=False)
SECURE_SSL_REDIRECT = _strict_bool("SECURE_SSL_REDIRECT", default=ATELIER_HTTPS)
# Workers relay job events to the web process over loopback HTTP (inference/events.py).
SECURE_REDIRECT_EXEMPT = [r"^internal/"]
SESSION_COOKIE_SECURE = _strict_bool("SESSION_COOKIE_SECURE", default=ATELIER_HTTPS)
CSRF_COOKIE_SECURE = _strict_bool("CSRF_COOKIE_SECURE", default=ATELIER_HTTPS)
SECURE_HSTS_SECONDS = int(_at_least(
    "SECURE_HSTS_SECONDS", env.int("SECURE_HSTS_SECONDS", default=31_536_000 if ATELIER_HTTPS else 0), 0
))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _strict_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=ATELIER_HTTPS)
# Preloading is a promise to browsers' built-in lists; opt in explicitly.
SECURE_HSTS_PRELOAD = _strict_bool("SECURE_HSTS_PRELOAD", default=False)


def _proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """`HTTP_X_FORWARDED_PROTO,https`: the header (as Django's META names it) and its value."""
    if not raw.strip():
        return None
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 2 or not parts[0].startswith("HTTP_") or not parts[1]:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={raw!r}: expected HEADER,value such as HTTP_X_FORWARDED_PROTO,https"
        )
    return parts[0], parts[1]


# Only behind a proxy that sets (and strips from clients) this header. frontend/proxy.py reads it too.
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env.str("SECURE_PROXY_SSL_HEADER", default=""))
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = env.str("SECURE_REFERRER_POLICY", default="same-origin")
X_FRAME_OPTIONS = "DENY"
# Sent on every Django response (config/security.py); the platform's pages and the admin load
# scripts and styles from /static/ only. Empty: no header. The /ui/ workspace sets its own.
ATELIER_CONTENT_SECURITY_POLICY = env.str(
    "ATELIER_CONTENT_SECURITY_POLICY",
    default=(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "font-src 'self'; connect-src 'self'; media-src 'self' blob:; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
)

# --- web server (daphne, see config/webserver.py) ----------------------------------------
# A connection that sends nothing for this long while its request is still arriving (or while
# idle between keep-alive requests) is closed. Not applied once the request has arrived, so
# long responses (Gradio's event streams) are not cut.
ATELIER_HTTP_IDLE_TIMEOUT_SECONDS = _at_least(
    "ATELIER_HTTP_IDLE_TIMEOUT_SECONDS", env.float("ATELIER_HTTP_IDLE_TIMEOUT_SECONDS", default=60.0), 0.1
)
# A request line and headers that have not all arrived this long after their first byte are
# refused by closing the connection, however slowly they trickle in (slowloris).
ATELIER_HTTP_HEADER_TIMEOUT_SECONDS = _at_least(
    "ATELIER_HTTP_HEADER_TIMEOUT_SECONDS", env.float("ATELIER_HTTP_HEADER_TIMEOUT_SECONDS", default=30.0), 0.1
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# Members' files (outputs, stored inputs: keys `users/<name>/…`) in DATA_DIR, or with
# ATELIER_S3_BUCKET in S3-compatible object storage (AWS, Alibaba OSS, MinIO) through
# django-storages, which also holds model files by content for workers that share no file system
# with the web process (`config/object_storage.py` says what goes where).
ATELIER_S3_BUCKET = env.str("ATELIER_S3_BUCKET", default="")
ATELIER_S3_SIGNED_URL_SECONDS = int(_at_least(
    "ATELIER_S3_SIGNED_URL_SECONDS", env.int("ATELIER_S3_SIGNED_URL_SECONDS", default=300), 1
))
if ATELIER_S3_BUCKET:
    from config.object_storage import ObjectStorageConfig, object_storages

    _style = env.str("ATELIER_S3_ADDRESSING_STYLE", default="")
    if _style not in ("", "path", "virtual"):
        raise ImproperlyConfigured(f"ATELIER_S3_ADDRESSING_STYLE={_style!r}: expected path or virtual")
    _object_storages = object_storages(ObjectStorageConfig(
        bucket=ATELIER_S3_BUCKET,
        endpoint_url=env.str("ATELIER_S3_ENDPOINT_URL", default=""),
        region=env.str("ATELIER_S3_REGION", default=""),
        access_key=env.str("ATELIER_S3_ACCESS_KEY_ID", default=""),
        secret_key=env.str("ATELIER_S3_SECRET_ACCESS_KEY", default=""),
        prefix=env.str("ATELIER_S3_PREFIX", default=""),
        addressing_style=_style,
        signed_url_seconds=ATELIER_S3_SIGNED_URL_SECONDS,
    ))
else:
    from config.object_storage import local_storages

    _object_storages = local_storages(str(DATA_DIR))
STORAGES = {
    **_object_storages,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# The ASGI app serves static files itself unless a front proxy does (set to false then).
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)

# --- broker, channel layer, job events ----------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = DATA_DIR / "broker"

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # Redis redelivers an unacked message after this; keep it above any job's run time. It is NOT
    # how a lost worker's jobs come back: messages go to each worker's own queue, so a redelivery
    # would only reach the same worker. Jobs come back through the database (the dispatcher's
    # reaper, ATELIER_WORKER_DEAD_AFTER_SECONDS), as a new attempt in a new message; a redelivered
    # old message then fails `job_claim`'s compare-and-set on (status, attempts) and is skipped.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4 * 3600}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, as long as channels_redis's
            # blocking BZPOPMIN waits: every websocket idle for 5 s crashed and was closed
            # (django/channels_redis#422). The read timeout must exceed that wait.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
    ATELIER_EVENT_TRANSPORT = "channel_layer"
else:
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    # kombu's file-system transport, with each message written atomically (config/filebroker.py).
    CELERY_BROKER_URL = "atelier-files://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),
        # How often an idle worker looks for a new message file (kombu's default is 1 s,
        # which would add half a second to every job on average).
        "polling_interval": 0.05,
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # The in-memory layer lives in the web process only: workers POST events to it.
    ATELIER_EVENT_TRANSPORT = "http"

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # the Job row is the result
# Delivery is at least once; "exactly once" is the database's job (inference/transitions.py: every
# transition a compare-and-set on (status, attempts)). Why each switch (tests/cluster/test_multi_host.py
# runs the faults):
# - acks late: a message is acked after its batch ran, so a worker killed mid-batch (kill -9, OOM)
#   leaves it unacked rather than silently consumed;
CELERY_TASK_ACKS_LATE = True
# - reject on worker lost: a batch whose process died is rejected (requeued), not acked as failed;
#   the redelivery is harmless (its attempt is stale once the reaper requeued the jobs);
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# - prefetch 1: a worker holds one message besides the one it runs, so a dead worker strands at most
#   that one (and the reaper takes its jobs back anyway);
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CONCURRENCY = 1  # one GPU job at a time per worker process
CELERY_WORKER_POOL = "solo"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# - cancel on connection loss: a worker that loses the broker mid-task cannot ack the message, which
#   Redis would redeliver; Celery cancels it rather than finishing into a lost ack. (The solo pool
#   only notices between tasks.) A worker that cannot reach Redis also stops writing its heartbeat
#   (inference/runner/lifecycle.py): the dispatcher must not send batches to a queue it cannot hear.
# The attempt cap (ATELIER_JOB_MAX_ATTEMPTS) and the dead-worker timeout (ATELIER_WORKER_DEAD_AFTER_SECONDS)
# are below, with the scheduling settings.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "atelier.default"
CELERY_IMPORTS = ["inference.runner.tasks"]

# Where a worker POSTs job events in the embedded default (set by `manage.py serve`).
ATELIER_EVENTS_URL = env.str("ATELIER_EVENTS_URL", default="")

# --- probes and metrics (config/observability.py, inference/health.py, inference/metrics.py) ---
# Each readiness check (database, broker, storage) must answer within this many seconds.
ATELIER_READINESS_TIMEOUT_SECONDS = _at_least(
    "ATELIER_READINESS_TIMEOUT_SECONDS", env.float("ATELIER_READINESS_TIMEOUT_SECONDS", default=2.0), 0.1
)
# Where workers and the sweeper touch their liveness file: a folder local to the container.
ATELIER_PROBE_DIR = Path(env.str("ATELIER_PROBE_DIR", default=str(Path(tempfile.gettempdir()) / "atelier-probes")))
# `Authorization: Bearer <this>` may read /metrics (Prometheus); empty: only operators' sessions may.
ATELIER_METRICS_TOKEN = env.str("ATELIER_METRICS_TOKEN", default="")

# --- models and working directories -------------------------------------------------
ATELIER_MODEL_KINDS = (
    "Stable-diffusion", "Lora", "VAE", "embeddings", "hypernetworks", "ControlNet", "ESRGAN", "GFPGAN", "Codeformer",
    "promptgen",
)
_PUBLIC_MODELS = DATA_DIR / "public" / "models"
# The equivalent of PAI's --ckpt-dir, --lora-dir, --vae-dir, --embeddings-dir, --hypernetwork-dir.
ATELIER_PUBLIC_MODEL_DIRS: dict[str, Path] = {
    "Stable-diffusion": Path(env.str("ATELIER_CKPT_DIR", default=str(_PUBLIC_MODELS / "Stable-diffusion"))),
    "Lora": Path(env.str("ATELIER_LORA_DIR", default=str(_PUBLIC_MODELS / "Lora"))),
    "VAE": Path(env.str("ATELIER_VAE_DIR", default=str(_PUBLIC_MODELS / "VAE"))),
    "embeddings": Path(env.str("ATELIER_EMBEDDINGS_DIR", default=str(_PUBLIC_MODELS / "embeddings"))),
    "hypernetworks": Path(env.str("ATELIER_HYPERNETWORK_DIR", default=str(_PUBLIC_MODELS / "hypernetworks"))),
    "ControlNet": Path(env.str("ATELIER_CONTROLNET_DIR", default=str(_PUBLIC_MODELS / "ControlNet"))),
    # ESRGAN / Real-ESRGAN upscalers (.pth, .safetensors): hires-fix upscalers by name
    "ESRGAN": Path(env.str("ATELIER_ESRGAN_DIR", default=str(_PUBLIC_MODELS / "ESRGAN"))),
    # Face restoration ("Restore faces"): GFPGANv1.4.pth / codeformer-v0.1.0.pth, and facexlib's
    # RetinaFace detector (detection_Resnet50_Final.pth) in either folder, as A1111 keeps them
    "GFPGAN": Path(env.str("ATELIER_GFPGAN_DIR", default=str(_PUBLIC_MODELS / "GFPGAN"))),
    "Codeformer": Path(env.str("ATELIER_CODEFORMER_DIR", default=str(_PUBLIC_MODELS / "Codeformer"))),
    # Prompt-generation models (BeautifulPrompt, promptgen): causal language models, one folder each
    # in the transformers layout (config.json, tokenizer files, model.safetensors)
    "promptgen": Path(env.str("ATELIER_PROMPTGEN_DIR", default=str(_PUBLIC_MODELS / "promptgen"))),
    # `/sdapi/v1/interrogate` (public only, placed by an operator; transformers folders, safetensors):
    # "clip" needs a BlipForConditionalGeneration folder in BLIP, a CLIPModel folder in CLIP and
    # the category phrase files (artists.txt, flavors.txt, mediums.txt, movements.txt) in
    # interrogate, as A1111 keeps them; "deepdanbooru" an image-classification tagger in deepbooru.
    "BLIP": Path(env.str("ATELIER_BLIP_DIR", default=str(_PUBLIC_MODELS / "BLIP"))),
    "CLIP": Path(env.str("ATELIER_CLIP_DIR", default=str(_PUBLIC_MODELS / "CLIP"))),
    "interrogate": Path(env.str("ATELIER_INTERROGATE_DIR", default=str(_PUBLIC_MODELS / "interrogate"))),
    "deepbooru": Path(env.str("ATELIER_DEEPBOORU_DIR", default=str(_PUBLIC_MODELS / "deepbooru"))),
}
# Pickled weights (.ckpt, .pt, .bin, .pth: unpickling can run code) are refused for every model kind
# unless the operator allows them: off, such files are not listed and uploads of them are refused
# (convert to .safetensors). On, embeddings and hypernetworks (.pt/.bin) and promptgen folders'
# pytorch_model.bin are listed too, each pickle first read statically (its opcodes, never run) and
# refused if it names any Python global beyond tensors and plain containers, then read by workers
# with torch's weights-only unpickler only (inference/model_files.py). Upscalers and face models
# (ESRGAN, GFPGAN, CodeFormer ship as .pth) are always allowed, under the same two checks.
# Checkpoints, LoRAs, VAEs and ControlNets load from .safetensors or diffusers folders only.
ATELIER_ALLOW_PICKLED_MODELS = env.bool("ATELIER_ALLOW_PICKLED_MODELS", default=False)
# The APIs (/sdapi, /api/v1, the EAS queue) degrade as A1111 does when a model is missing (the
# workspace says what to install instead): `restore_faces` without face-restoration weights
# returns the image unrestored, and a hires fix or Extras naming one of A1111's own upscalers that
# is not installed upscales with Lanczos (Extras skips a missing restorer); `info` / `html_info`
# notes what is missing and what to install. On: such a request is refused (404 naming the field
# and the file to install) instead.
ATELIER_STRICT_MISSING_MODELS = env.bool("ATELIER_STRICT_MISSING_MODELS", default=False)
ATELIER_MODEL_CACHE_DIR = DATA_DIR / "cache"
# A worker's local copies of model files fetched from object storage (by sha256, least recently
# used evicted past this many bytes; a file in use is never evicted). Unused without a bucket.
ATELIER_MODEL_CACHE_MAX_BYTES = env.int("ATELIER_MODEL_CACHE_MAX_BYTES", default=100 * 1024**3)
# PAI's --enable-nsfw-censor: workers run a safety checker (a StableDiffusionSafetyChecker folder
# here) over every image and blur what it flags; with it on and no model there, jobs fail saying so.
ATELIER_NSFW_CENSOR = env.bool("ATELIER_NSFW_CENSOR", default=False)
ATELIER_SAFETY_CHECKER_DIR = Path(env.str("ATELIER_SAFETY_CHECKER_DIR", default=str(_PUBLIC_MODELS / "safety_checker")))
ATELIER_TINY_MODEL_NAME = "atelier-tiny.safetensors"
# The FileBrowser's "download folder as zip": a folder holding more than this many bytes is refused
# (413) before the download starts; its subfolders and files download one by one.
ATELIER_ZIP_MAX_BYTES = env.int("ATELIER_ZIP_MAX_BYTES", default=20 * 1024**3)

# --- generation limits (a 400 names the field past them) ----------------------------
ATELIER_MAX_STEPS = env.int("ATELIER_MAX_STEPS", default=150)
ATELIER_MIN_SIZE = 64
ATELIER_MAX_SIZE = env.int("ATELIER_MAX_SIZE", default=2048)
ATELIER_MAX_BATCH_SIZE = env.int("ATELIER_MAX_BATCH_SIZE", default=8)
ATELIER_MAX_N_ITER = env.int("ATELIER_MAX_N_ITER", default=16)
ATELIER_MAX_PROMPT_CHARS = env.int("ATELIER_MAX_PROMPT_CHARS", default=10_000)
ATELIER_MAX_PROMPT_CHUNKS = env.int("ATELIER_MAX_PROMPT_CHUNKS", default=16)  # 75-token chunks (BREAK starts one)
# Prompt expansion: how long `POST /api/v1/promptgen` with "wait": true waits for the texts
# before answering with the job to poll instead.
ATELIER_PROMPTGEN_WAIT_SECONDS = env.float("ATELIER_PROMPTGEN_WAIT_SECONDS", default=60.0)
ATELIER_MAX_UPLOAD_BYTES = env.int("ATELIER_MAX_UPLOAD_BYTES", default=10 * 1024 * 1024)  # one input image
ATELIER_MAX_INPUT_PIXELS = env.int("ATELIER_MAX_INPUT_PIXELS", default=4096 * 4096)  # one input image
# A whole JSON request body (base64 images included); bigger images go by URL, as PAI advises.
ATELIER_MAX_REQUEST_BYTES = env.int("ATELIER_MAX_REQUEST_BYTES", default=24 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = ATELIER_MAX_REQUEST_BYTES
# Resumable uploads (`/api/v1/uploads`, tenants/uploads.py): one PUT's body at most CHUNK bytes
# (413 past it), one file at most MAX bytes; a session not written to for EXPIRY hours is dropped.
ATELIER_UPLOAD_CHUNK_BYTES = int(_at_least("ATELIER_UPLOAD_CHUNK_BYTES", env.int("ATELIER_UPLOAD_CHUNK_BYTES", default=8 * 1024 * 1024), 1))
ATELIER_UPLOAD_MAX_BYTES = int(_at_least("ATELIER_UPLOAD_MAX_BYTES", env.int("ATELIER_UPLOAD_MAX_BYTES", default=20 * 1024**3), 1))
ATELIER_UPLOAD_EXPIRY_HOURS = _at_least("ATELIER_UPLOAD_EXPIRY_HOURS", env.float("ATELIER_UPLOAD_EXPIRY_HOURS", default=24.0), 0.01)
ATELIER_UPLOAD_MAX_OPEN_PER_USER = int(_at_least("ATELIER_UPLOAD_MAX_OPEN_PER_USER", env.int("ATELIER_UPLOAD_MAX_OPEN_PER_USER", default=8), 1))
# Image URLs (img2img `init_images`, PAI's `image_link`) are fetched with a deadline. Private,
# loopback and link-local addresses are refused (SSRF); ALLOW_PRIVATE exists for tests and
# single-machine demos only and must stay off wherever the platform can reach a private network.
ATELIER_FETCH_TIMEOUT_SECONDS = env.float("ATELIER_FETCH_TIMEOUT_SECONDS", default=10.0)
ATELIER_FETCH_ALLOW_PRIVATE = env.bool("ATELIER_FETCH_ALLOW_PRIVATE", default=False)
# Model downloads (the ModelZoo, inference/model_downloads.py): operators register a model by URL
# and the sweeper's downloader thread fetches it, one at a time per sweeper, under the same SSRF
# rules. ALLOWED_HOSTS names internal mirrors (`mirror.internal`, `10.0.0.5:8080`) whose addresses
# may be private; every other host, and every redirect away from a mirror, must be public.
ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS = env.list("ATELIER_MODEL_DOWNLOAD_ALLOWED_HOSTS", default=[])
ATELIER_MODEL_DOWNLOAD_MAX_BYTES = env.int("ATELIER_MODEL_DOWNLOAD_MAX_BYTES", default=64 * 1024**3)
ATELIER_MODEL_DOWNLOAD_TIMEOUT_SECONDS = env.float("ATELIER_MODEL_DOWNLOAD_TIMEOUT_SECONDS", default=6 * 3600.0)
# A download whose downloader has not reported for this long (its sweeper died) is queued again.
ATELIER_MODEL_DOWNLOAD_STALE_SECONDS = env.float("ATELIER_MODEL_DOWNLOAD_STALE_SECONDS", default=120.0)

# --- workers and dispatch -----------------------------------------------------------
ATELIER_DEVICE = env.str("ATELIER_DEVICE", default="auto")  # auto, cpu, cuda, cuda:1, mps
ATELIER_WORKER_DTYPE = env.str("ATELIER_WORKER_DTYPE", default="auto")  # auto (fp16 on GPUs), float16, bfloat16, float32
ATELIER_PIPELINE_CACHE_SIZE = env.int("ATELIER_PIPELINE_CACHE_SIZE", default=2)
# On a GPU, pipelines pushed off the device wait in host RAM (PAI's --sd-dynamic-cache), and
# leave it first whenever less than this many GiB of RAM would stay free (--min-ram-reserved).
ATELIER_HOST_CACHE_SIZE = env.int("ATELIER_HOST_CACHE_SIZE", default=4)
ATELIER_MIN_RAM_RESERVED_GIB = env.float("ATELIER_MIN_RAM_RESERVED_GIB", default=4.0)
# Speed switches (runtime/acceleration.py): PAI's --xformers / --blade.
ATELIER_WORKER_ATTENTION = env.str("ATELIER_WORKER_ATTENTION", default="auto")  # auto, sdpa, xformers
ATELIER_WORKER_CHANNELS_LAST = env.str("ATELIER_WORKER_CHANNELS_LAST", default="off")  # on, off
# "" (off), default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs
ATELIER_WORKER_COMPILE = env.str("ATELIER_WORKER_COMPILE", default="")
ATELIER_VAE_SLICING_FROM_BATCH = env.int("ATELIER_VAE_SLICING_FROM_BATCH", default=8)
ATELIER_VAE_TILING_FROM_PIXELS = env.int("ATELIER_VAE_TILING_FROM_PIXELS", default=1536 * 1536)
ATELIER_HEARTBEAT_SECONDS = env.float("ATELIER_HEARTBEAT_SECONDS", default=2.0)
# A worker silent this long is dead: its jobs are requeued (or failed at the attempt cap). It is
# the floor of every fault's recovery (a cut link, a kill -9 outside `manage.py serve`, a worker cut
# from Redis): a job on a lost worker waits this long, plus one job's time to re-run. Shorter
# reaps sooner but declares a paused worker dead sooner (harmless: its late finish loses the CAS).
ATELIER_WORKER_DEAD_AFTER_SECONDS = env.float("ATELIER_WORKER_DEAD_AFTER_SECONDS", default=20.0)
# A job handed to a live worker that has not started it by then goes back to the queue (a message
# lost with a Redis that restarted without its data ends here at the latest).
ATELIER_DISPATCH_TIMEOUT_SECONDS = env.float("ATELIER_DISPATCH_TIMEOUT_SECONDS", default=120.0)
# A batch sent to a live worker that is running nothing, and not claimed after this long, was most
# likely lost by the broker (a Redis restarted without its data): the dispatcher sends the same
# message again, once (inference/dispatch.py `lost_batches_resend`). A duplicate is harmless: a
# claim is a compare-and-set on the dispatch number, so the second copy is skipped.
ATELIER_RESEND_UNCLAIMED_SECONDS = env.float(
    "ATELIER_RESEND_UNCLAIMED_SECONDS", default=max(3 * ATELIER_HEARTBEAT_SECONDS, 5.0)
)
# A job is handed out at most this many times (each dispatch is an attempt): a job that kills every
# worker it lands on fails with a message instead of taking the pool down in turn.
ATELIER_JOB_MAX_ATTEMPTS = env.int("ATELIER_JOB_MAX_ATTEMPTS", default=3)
# Scheduling (see inference/scheduler/types.py PolicyConfig for what each one does).
ATELIER_WORKER_MAX_BATCH = env.int("ATELIER_WORKER_MAX_BATCH", default=8)  # images per pipeline call
# At least the worker max batch, or one user's burst of single images can never fill a batch.
ATELIER_MAX_RUNNING_PER_USER = env.int("ATELIER_MAX_RUNNING_PER_USER", default=8)
ATELIER_MAX_RUNNING_PER_TENANT = env.int("ATELIER_MAX_RUNNING_PER_TENANT", default=16)
ATELIER_MAX_QUEUED_JOBS_PER_USER = env.int("ATELIER_MAX_QUEUED_JOBS_PER_USER", default=100)  # waiting, not yet running
ATELIER_MAX_XYZ_CELLS = env.int("ATELIER_MAX_XYZ_CELLS", default=64)  # cells (jobs) of one X/Y/Z plot
# EAS async services: the most a member or tenant admin may set on /services/ (operators may set more in admin).
ATELIER_EAS_MAX_PAYLOAD_BYTES = env.int("ATELIER_EAS_MAX_PAYLOAD_BYTES", default=64 * 1024 * 1024)
ATELIER_EAS_MAX_RESULT_RETENTION_HOURS = env.int("ATELIER_EAS_MAX_RESULT_RETENTION_HOURS", default=30 * 24)
ATELIER_AFFINITY_GRACE_SECONDS = env.float("ATELIER_AFFINITY_GRACE_SECONDS", default=5.0)
ATELIER_MAX_REORDER_WAIT_SECONDS = env.float("ATELIER_MAX_REORDER_WAIT_SECONDS", default=60.0)
ATELIER_SERVICE_HALF_LIFE_SECONDS = env.float("ATELIER_SERVICE_HALF_LIFE_SECONDS", default=300.0)
# Why a queued job waits and its place in line (the job JSON's `queue`, /sdapi/v1/progress's
# textinfo, the workspace's bar) is read from one snapshot of the queue, kept this long in each
# process's cache, instead of re-ordering the whole queued window on every poll (inference/waiting.py).
# An answer is at most this old; 0 reads the queue on every call.
ATELIER_QUEUE_STATE_TTL_SECONDS = env.float("ATELIER_QUEUE_STATE_TTL_SECONDS", default=1.0)
if ATELIER_QUEUE_STATE_TTL_SECONDS < 0:
    raise ImproperlyConfigured(f"ATELIER_QUEUE_STATE_TTL_SECONDS must be 0 or more, not {ATELIER_QUEUE_STATE_TTL_SECONDS}")
# Progress is written and published at most this often while a job runs (and at its end). Each
# write is an UPDATE of the job row (with the live preview, which /sdapi/v1/progress, the native
# API and the workspace read from it), and it is also when the worker learns of a cancel. 0.5 s
# matches how often A1111 clients poll progress and keeps a cancel under a second, at 2.5× fewer
# writes per running job than 0.2 s (workers × jobs per batch × 2 writes/s at most).
ATELIER_PROGRESS_INTERVAL_SECONDS = env.float("ATELIER_PROGRESS_INTERVAL_SECONDS", default=0.5)
# zlib level (0-9) of the PNGs workers write (generations, Extras, plot grids). A1111 uses Pillow's
# 6; 1 encodes a 512×512 image several times faster (tens of ms less per image, on the critical path
# of every job) for files about 15% larger (docs/PERFORMANCE.md). The pixels and infotext are the same.
ATELIER_PNG_COMPRESS_LEVEL = int(env.int("ATELIER_PNG_COMPRESS_LEVEL", default=1))
if not 0 <= ATELIER_PNG_COMPRESS_LEVEL <= 9:
    raise ImproperlyConfigured(f"ATELIER_PNG_COMPRESS_LEVEL must be 0 to 9, not {ATELIER_PNG_COMPRESS_LEVEL}")
# A running job's live preview (a cheap latent-to-RGB picture) is refreshed every this many steps; 0: none.
ATELIER_PREVIEW_EVERY_STEPS = env.int("ATELIER_PREVIEW_EVERY_STEPS", default=5)

# --- browser workspaces (one Gradio process per member, behind /ui/) -------------------
# A workspace with no request for this long is stopped (an open but untouched tab does not count).
ATELIER_WORKSPACE_IDLE_SECONDS = env.float("ATELIER_WORKSPACE_IDLE_SECONDS", default=1800.0)
# Workspace processes running at once; a new one stops the session idle the longest.
ATELIER_WORKSPACE_MAX_SESSIONS = env.int("ATELIER_WORKSPACE_MAX_SESSIONS", default=8)
# Processes kept booted (Gradio imported, Django set up) and waiting to be handed to a member.
ATELIER_WORKSPACE_SPARES = env.int("ATELIER_WORKSPACE_SPARES", default=1)
ATELIER_WORKSPACE_START_TIMEOUT_SECONDS = env.float("ATELIER_WORKSPACE_START_TIMEOUT_SECONDS", default=60.0)
# How long the proxy trusts a session cookie it has checked (a logout takes effect within this).
ATELIER_WORKSPACE_AUTH_CACHE_SECONDS = env.float("ATELIER_WORKSPACE_AUTH_CACHE_SECONDS", default=2.0)


def _hidden_tabs(raw: str) -> tuple[str, ...]:
    from frontend.workspace.tab_ids import UnknownTab, parse_hidden_tabs  # pure: no Django, no Gradio

    try:
        return parse_hidden_tabs(raw)
    except UnknownTab as exc:
        raise ImproperlyConfigured(f"ATELIER_HIDDEN_TABS={raw!r}: {exc}") from None


# Workspace tabs hidden for every member (PAI's --always-hide-tabs), comma-separated tab ids
# (`frontend/workspace/tab_ids.py`); a tenant hides more with `Tenant.hidden_workspace_tabs`.
ATELIER_HIDDEN_TABS = _hidden_tabs(env.str("ATELIER_HIDDEN_TABS", default=""))

# LOG_FORMAT: `plain` (the default: a line per record, then `[worker=… batch=… job=…]` when set) or
# `json` (one JSON object per line: time, level, logger, message, exception, worker, batch, job).
# The fields come from `config/logcontext.py`'s `log_context`, set where work happens.
LOG_FORMATS = ("plain", "json")
LOG_FORMAT = env.str("LOG_FORMAT", default="plain").strip().lower()
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: expected one of {', '.join(LOG_FORMATS)}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.logcontext.ContextFilter"}},
    "formatters": {
        "plain": {"()": "config.logcontext.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "config.logcontext.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # httpx logs every request at INFO: the workspace proxy makes dozens per page.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
