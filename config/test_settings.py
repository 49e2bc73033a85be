"""Test settings: the real settings, with a throw-away DATA_DIR and fast timings.

DATABASE_URL / REDIS_URL decide, as in production, whether the suite runs on the
embedded default (SQLite, file broker) or on PostgreSQL + Redis.
"""

import os
import tempfile

os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="atelier-test-"))
# pytest-xdist's processes inherit the first process's environment: each gets a folder of its own
# in it, so no test sees another process's files (members' models, outputs, the SQLite database).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["DATA_DIR"] = os.path.join(os.environ["DATA_DIR"], os.environ["PYTEST_XDIST_WORKER"])
    os.makedirs(os.environ["DATA_DIR"], mode=0o700, exist_ok=True)

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
# Places in line read fresh on every call, so tests that submit and look at once see exact places
# (tests/inference/test_waiting.py sets a TTL to test the snapshot itself).
ATELIER_QUEUE_STATE_TTL_SECONDS = 0.0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
