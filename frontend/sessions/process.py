"""Starting and stopping workspace processes (`python -m frontend.workspace.server --spare`).

Every process is started as a *spare*: it binds nothing itself but inherits a listening socket
on 127.0.0.1 that this module bound (so no other program can take its port between choosing and
binding), imports Gradio and sets Django up, then waits for its assignment on stdin. Assigning
it to a member is one JSON line with the member's id and a fresh random secret.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# Settings and credentials of the web process a workspace has no business inheriting.
_WITHHELD_ENV = ("ATELIER_WORKSPACE_SECRET", "ATELIER_WORKSPACE_USER_ID", "ATELIER_WORKSPACE_PORT",
                 "ATELIER_WORKSPACE_SOCKET", "ATELIER_WORKSPACE_FD")


@dataclass(eq=False)  # identity: kept in sets while stopping
class WorkspaceProcess:
    process: subprocess.Popen
    port: int
    log_path: Path
    spawned_at: float = field(default_factory=time.monotonic)
    assigned: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def assign(self, *, user_id: int, secret: str, log_path: Path) -> bool:
        """Hand the spare to a member; False if it has died meanwhile."""
        if not self.alive():
            return False
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"user_id": user_id, "secret": secret}).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        self.assigned = True
        try:
            self.log_path.replace(log_path)
            self.log_path = log_path
        except OSError:
            pass
        return True

    def terminate(self) -> None:
        if self.alive():
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        if self.alive():
            try:
                self.process.kill()
            except ProcessLookupError:
                pass
        self.close_stdin()

    def close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass


def spawn_workspace_process(*, log_dir: Path, env: dict[str, str] | None = None) -> WorkspaceProcess:
    """Start a spare workspace process on a loopback port of its own."""
    log_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        child_env = {k: v for k, v in (env or os.environ).items() if k not in _WITHHELD_ENV}
        child_env["ATELIER_WORKSPACE_FD"] = str(sock.fileno())
        child_env.setdefault("DJANGO_SETTINGS_MODULE", os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"))
        child_env["PYTHONUNBUFFERED"] = "1"
        log_path = log_dir / f"spare-{port}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "frontend.workspace.server", "--spare"],
                cwd=REPO,
                env=child_env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),),
                start_new_session=True,  # a Ctrl-C in the web's terminal is the web's to handle
            )
    finally:
        sock.close()  # the child holds its own copy
    return WorkspaceProcess(process=process, port=port, log_path=log_path)
