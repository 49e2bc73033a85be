"""What a member's browser workspace costs: cold start, proxy latency, memory.

Starts the real platform (daphne, no GPU worker) and prints, in one run:

  * cold start: from a member's first GET /ui/ to /ui/ answering with the Gradio page, both for
    the first member after the web process started (no spare booted yet) and for a member who
    gets a warm spare (the default: ATELIER_WORKSPACE_SPARES=1);
  * proxy latency: a small Gradio route (`/ui/gradio_api/app_id`, and the larger
    `/ui/gradio_api/info`) through the platform's /ui/ proxy, against the same route called
    directly, with the secret, on a workspace process of the same member started from the
    environment. Requests alternate between the two, one keep-alive connection each;
  * memory: the resident set of one idle workspace process, of a spare, and of the web process.

Usage (from the repository root):

    .venv/bin/python bench/workspace.py [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from tests.harness import Platform, free_port  # noqa: E402

SECRET_HEADER = "X-Atelier-Workspace-Secret"


def transport() -> httpx.HTTPTransport:
    # As browsers and the proxy's own async client do.
    return httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


def login(platform: Platform, username: str) -> httpx.Client:
    client = httpx.Client(base_url=platform.base_url, timeout=120, transport=transport())
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get("/login/").text).group(1)
    password = platform.credentials[username]["password"]
    client.post("/login/", data={"username": username, "password": password, "csrfmiddlewaretoken": token})
    return client


def cold_start(client: httpx.Client) -> float:
    """Seconds from the first /ui/ request until /ui/ answers with the Gradio page."""
    started = time.perf_counter()
    response = client.get("/ui/")
    while response.status_code != 200:
        time.sleep(0.02)
        if client.get("/ui/_atelier/status").json()["status"] == "running":
            response = client.get("/ui/")
    return time.perf_counter() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wait_for_spare(platform: Platform, timeout: float = 120) -> int:
    def ready() -> int | None:
        for log in (platform.data_dir / "workspaces" / "logs").glob("spare-*.log"):
            if "spare ready" in log.read_text(errors="replace"):
                return int(log.stem.split("-")[1])
        return None

    return Platform.wait_until(ready, timeout=timeout, what="a warm spare", interval=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    platform = Platform(env_overrides={"ATELIER_WORKSPACE_SPARES": "1", "ATELIER_WORKSPACE_MAX_SESSIONS": "4"})
    direct_process: subprocess.Popen | None = None
    try:
        platform.start(workers=0)
        alice, bob = login(platform, "alice"), login(platform, "bob")

        first = cold_start(alice)
        wait_for_spare(platform)
        warm = cold_start(bob)

        sessions = json.loads(platform.manage("workspaces", "--json"))
        port, secret = free_port(), secrets.token_urlsafe(32)
        env = platform.env() | {
            "ATELIER_WORKSPACE_USER_ID": str(sessions["alice"]["user_id"]),
            "ATELIER_WORKSPACE_SECRET": secret,
            "ATELIER_WORKSPACE_PORT": str(port),
        }
        log = open(platform.data_dir / "direct.log", "ab")  # noqa: SIM115
        direct_process = subprocess.Popen(
            [sys.executable, "-m", "frontend.workspace.server"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        direct = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={SECRET_HEADER: secret}, timeout=60, transport=transport()
        )

        def direct_up() -> bool:
            try:
                return direct.get("/_atelier/health").status_code == 200
            except httpx.TransportError:
                return False

        Platform.wait_until(direct_up, timeout=120, what="the direct workspace process")

        results: dict[str, dict[str, list[float]]] = {}
        for route, count in (("/ui/gradio_api/app_id", args.requests), ("/ui/gradio_api/info", max(50, args.requests // 6))):
            timings: dict[str, list[float]] = {"direct": [], "proxy": []}
            for _ in range(20):  # warm both connections and caches
                assert direct.get(route).status_code == 200 and alice.get(route).status_code == 200
            for _ in range(count):
                for name, client in (("direct", direct), ("proxy", alice)):
                    started = time.perf_counter()
                    response = client.get(route)
                    timings[name].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (name, response.status_code)
            results[route] = timings

        time.sleep(3)  # let alice's process settle idle
        sessions = json.loads(platform.manage("workspaces", "--json"))
        web_pid = platform.processes["web"].pid
        spare_pids = [
            int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and b"--spare" in (p / "cmdline").read_bytes()
            and int(p.name) not in (sessions["alice"]["pid"], sessions["bob"]["pid"])
            and os.getppid() != int(p.name)
            and _parent(int(p.name)) == web_pid
        ]

        print(f"machine: {os.cpu_count()} CPUs; Gradio workspaces behind daphne (embedded default)")
        print()
        print("cold start, first GET /ui/ → Gradio page answers")
        print(f"  first member after boot (no spare yet) {first:8.2f} s")
        print(f"  member given a warm spare              {warm:8.2f} s")
        print()
        for route, timings in results.items():
            d, p = timings["direct"], timings["proxy"]
            print(f"GET {route}  ({len(d)} requests each, alternating, keep-alive)")
            print(f"  {'':18}{'direct+secret':>14}{'via /ui/ proxy':>16}{'added':>10}")
            for label, fn in (("median ms", statistics.median), ("p95 ms", lambda v: percentile(v, 0.95))):
                print(f"  {label:18}{fn(d):14.2f}{fn(p):16.2f}{fn(p) - fn(d):10.2f}")
            print()
        print("memory (RSS)")
        print(f"  idle workspace process (alice)   {rss_mib(sessions['alice']['pid']):8.1f} MiB")
        for pid in spare_pids[:1]:
            print(f"  warm spare process               {rss_mib(pid):8.1f} MiB")
        print(f"  web process (daphne)             {rss_mib(web_pid):8.1f} MiB")
    finally:
        if direct_process is not None:
            direct_process.terminate()
            direct_process.wait(timeout=30)
        platform.stop()


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


if __name__ == "__main__":
    main()
