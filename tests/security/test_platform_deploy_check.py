"""`manage.py check --deploy` is clean with the documented production environment (issue #13),
the HTTPS settings come from the environment with strict parsing, and the embedded database,
DATA_DIR and secret key are owner-only."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The production environment the README documents (plus a throw-away DATA_DIR).
PRODUCTION_ENV = {
    "ATELIER_HTTPS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "ALLOWED_HOSTS": "atelier.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://atelier.example.com",
}


def _manage(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("ATELIER_", "SECURE_", "SESSION_", "CSRF_")) and key not in ("DATABASE_URL", "SECRET_KEY")
    }
    environment.update(DJANGO_SETTINGS_MODULE="config.settings", DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=environment, capture_output=True, text=True,
        timeout=300, preexec_fn=lambda: os.umask(0o022),  # a usual umask, whatever the test runner's
    )


def test_check_deploy_is_clean_with_the_production_environment(tmp_path):
    result = _manage(
        tmp_path / "data", "check", "--deploy", "--fail-level", "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION_ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr and "security.W" not in result.stderr + result.stdout


def test_production_settings_are_what_the_profile_promises(tmp_path):
    code = (
        "from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER)"
    )
    result = _manage(tmp_path / "data", "shell", "-c", code, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "True True True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    # Each switch also on its own, over the profile.
    result = _manage(tmp_path / "data", "shell", "-c", code, ATELIER_HTTPS="true", SECURE_SSL_REDIRECT="false",
                     SECURE_HSTS_SECONDS="600")
    assert result.stdout.split("\n")[-2] == "False True True 600 True False None"


def test_malformed_settings_are_refused(tmp_path):
    for name, value in (("ATELIER_HTTPS", "treu"), ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto"),
                        ("ATELIER_LOGIN_FAILURE_LIMIT", "0"), ("ATELIER_LOGIN_LOCKOUT_PARAMETERS", "user")):
        result = _manage(tmp_path / "data", "check", **{name: value})
        assert result.returncode != 0, name
        assert "ImproperlyConfigured" in result.stderr and name in result.stderr, result.stderr[-500:]


def test_database_data_dir_and_secret_key_are_owner_only(tmp_path):
    data_dir = tmp_path / "data"
    result = _manage(data_dir, "migrate", "--noinput", "-v", "0")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm", "secret_key"):
        path = data_dir / name
        if name == "db.sqlite3" or name == "secret_key" or path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_an_existing_world_readable_database_is_narrowed(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "db.sqlite3").touch()
    (data_dir / "db.sqlite3").chmod(0o644)
    result = _manage(data_dir, "check")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "db.sqlite3").stat().st_mode) == 0o600
