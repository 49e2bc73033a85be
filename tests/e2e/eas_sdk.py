"""Alibaba's official queue SDK (`eas-prediction` 0.36 from PyPI, unmodified) for end-to-end tests.

The SDK pins `protobuf<=3.20.3` and imports numpy and python-snappy at package import, so it never
enters the project's own environment: `sdk_python()` builds a separate virtual environment from
`SDK_REQUIREMENTS` once, in the gitignored `.cache/eas-sdk/<hash of the requirements>/`, and
later calls (and later runs) reuse it. A lock file keeps parallel test processes from building it
twice. The client programs in `tests/e2e/eas_clients/` run with that environment's python as
subprocesses and print one JSON object per line; `SdkProcess` reads those lines with a timeout,
so a test never blocks forever on a watcher that receives nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[2]
CLIENTS = Path(__file__).resolve().parent / "eas_clients"

# What `pip install eas-prediction==0.36` resolves on Python 3.11 (reference §1), pinned so the
# cache key changes only when this list does.
SDK_REQUIREMENTS: tuple[str, ...] = (
    "eas-prediction==0.36",
    "protobuf==3.20.3",
    "urllib3==2.8.0",
    "numpy==2.4.6",
    "websocket-client==1.9.2",
    "python-snappy==0.7.3",
    "cramjam==2.14.0",
)


def sdk_env_dir(requirements: Sequence[str] = SDK_REQUIREMENTS) -> Path:
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
    root = Path(os.environ.get("ATELIER_EAS_SDK_CACHE", REPO / ".cache" / "eas-sdk"))
    return root / key


def sdk_python(requirements: Sequence[str] = SDK_REQUIREMENTS) -> Path:
    """The python of a virtual environment holding the SDK; built on first use, then reused."""
    env_dir = sdk_env_dir(requirements)
    python = env_dir / "bin" / "python"
    ready = env_dir / ".installed"
    if ready.exists():
        return python
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(env_dir.parent / f"{env_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it right now
        if ready.exists():
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
            check=True, env={**sdk_env(), "PIP_NO_INPUT": "1"}, timeout=600,
        )
        # The import is the check: the SDK's package __init__ pulls in every dependency.
        subprocess.run([str(python), "-c", "from eas_prediction import QueueClient"], check=True, env=sdk_env())
        ready.write_text("\n".join(requirements) + "\n")
    return python


def sdk_env() -> dict[str, str]:
    """The environment the client programs run in: none of the project's settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTHON"))}
    # protobuf 3.20.3 on 3.11 is the pure-python implementation already; this keeps the old
    # generated pb2 importable even if a newer protobuf ever resolves (reference §0.9).
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class SdkProcess:
    """One client program (tests/e2e/eas_clients/<name>.py) running under the SDK's python.

    `config` goes to the program as one JSON argument; every line it prints is parsed as JSON
    and queued. `next()` waits for the next line (TimeoutError when none comes), `kill()` is
    SIGKILL: a consumer that vanishes without closing its websocket.
    """

    def __init__(self, python: Path, program: str, config: dict[str, Any]) -> None:
        self.program = program
        self.process = subprocess.Popen(
            [str(python), str(CLIENTS / f"{program}.py"), json.dumps(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sdk_env(), text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if line:
                try:
                    self.lines.put(json.loads(line))
                except json.JSONDecodeError:
                    self.lines.put({"unparsed": line})
        self.lines.put(None)  # end of output

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def next(self, timeout: float = 60) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.program}: no output for {timeout}s; stderr:\n{self.stderr_text()}") from None
        if line is None:
            self.lines.put(None)  # stays at the end for later calls
            raise EOFError(f"{self.program} exited ({self.process.wait()}); stderr:\n{self.stderr_text()}")
        return line

    def take(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        return [self.next(timeout) for _ in range(count)]

    def stderr_text(self) -> str:
        return "".join(self.stderr[-60:])

    def wait(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_client(python: Path, program: str, config: dict[str, Any], timeout: float = 120) -> list[dict[str, Any]]:
    """Run a client program to its end; its JSON lines. A non-zero exit raises with its stderr."""
    result = subprocess.run(
        [str(python), str(CLIENTS / f"{program}.py"), json.dumps(config)],
        check=False, capture_output=True, text=True, env=sdk_env(), timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{program} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
