"""What a member's browser workspace costs: cold start, proxy latency, memory.

Starts the real platform (daphne, no GPU worker) and prints, in one run:

  * cold start: from a member's first GET /ui/ to /ui/ answering with the Gradio page, for
    the first member right after the web process started (it boots its first spare as it starts:
    the member gets that spare, maybe still importing), for a member who gets a warm spare (the
    default: ATELIER_WORKSPACE_SPARES=1), and for a workspace process with no spare at all
    (started from scratch, from the environment: imports, build, serve, then the page, no proxy);
    and where each member's seconds went, from the processes' own logs;
  * proxy latency: a small Gradio route (`/ui/gradio_api/app_id`, and the larger
    `/ui/gradio_api/info`) through the platform's /ui/ proxy, against the same route called
    directly, with the secret, on a workspace process of the same member started from the
    environment. Requests alternate between the two, one keep-alive connection each;
  * memory: the resident set of one idle workspace process, of a spare, and of the web process.

With `--baseline-tree PATH` (another checkout, e.g. `git worktree add /tmp/main-tree main`) it
measures that tree and this one in turns (`--rounds`, each a platform of its own, baseline first)
and prints the medians side by side. It prints the load average beside the figures and ends
with one JSON line.

Usage (from the repository root):

    .venv/bin/python bench/workspace.py [--requests 300] [--baseline-tree PATH --rounds 3]
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



def _tree() -> Path:
    """The checkout measured: this one, or `--tree PATH` (how a baseline run is started)."""
    if "--tree" in sys.argv:
        return Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
    return Path(__file__).resolve().parent.parent


REPO = _tree()
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


def measure(requests: int) -> dict:
    """One platform of REPO's code: every figure, and the workspace processes' own timing lines."""
    load_before = _loadavg()
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
        spawned = time.perf_counter()
        direct = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={SECRET_HEADER: secret}, timeout=60, transport=transport()
        )

        def direct_up() -> bool:
            try:
                return direct.get("/_atelier/health").status_code == 200
            except httpx.TransportError:
                return False

        Platform.wait_until(direct_up, timeout=120, what="the direct workspace process", interval=0.02)
        assert direct.get("/ui/").status_code == 200
        scratch = time.perf_counter() - spawned

        results: dict[str, dict[str, list[float]]] = {}
        for route, count in (("/ui/gradio_api/app_id", requests), ("/ui/gradio_api/info", max(50, requests // 6))):
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

        logs = platform.data_dir / "workspaces" / "logs"
        proxy: dict[str, dict[str, float]] = {}
        for route, timings in results.items():
            d, p = timings["direct"], timings["proxy"]
            proxy[route] = {
                "requests": len(d),
                "direct_median_ms": statistics.median(d), "proxy_median_ms": statistics.median(p),
                "direct_p95_ms": percentile(d, 0.95), "proxy_p95_ms": percentile(p, 0.95),
            }
        return {
            "tree": str(REPO), "loadavg_start": load_before, "loadavg_end": _loadavg(),
            "cold_start_first_member_s": first, "cold_start_warm_spare_s": warm, "cold_start_no_spare_direct_s": scratch,
            "proxy": proxy,
            "rss_idle_workspace_mib": rss_mib(sessions["alice"]["pid"]),
            "rss_spare_mib": rss_mib(spare_pids[0]) if spare_pids else float("nan"),
            "rss_web_mib": rss_mib(web_pid),
            "phases": {username: _phases(logs / f"{username}.log") for username in ("alice", "bob")},
        }
    finally:
        if direct_process is not None:
            direct_process.terminate()
            direct_process.wait(timeout=30)
        platform.stop()


FIGURES = (  # (label, key, format)
    ("cold start: first member right after the web process started", "cold_start_first_member_s", "{:.2f} s"),
    ("cold start: member given a warm spare", "cold_start_warm_spare_s", "{:.2f} s"),
    ("cold start: no spare, a process from scratch (direct)", "cold_start_no_spare_direct_s", "{:.2f} s"),
    ("RSS: idle workspace process", "rss_idle_workspace_mib", "{:.1f} MiB"),
    ("RSS: warm spare process", "rss_spare_mib", "{:.1f} MiB"),
    ("RSS: web process (daphne)", "rss_web_mib", "{:.1f} MiB"),
)


def flat(run: dict) -> dict[str, float]:
    """A run's figures by key, the proxy's per route as `proxy_added_median_ms <route>` etc."""
    figures = {key: run[key] for _label, key, _fmt in FIGURES}
    for route, timing in run["proxy"].items():
        figures[f"proxy_added_median_ms {route}"] = timing["proxy_median_ms"] - timing["direct_median_ms"]
        figures[f"proxy_added_p95_ms {route}"] = timing["proxy_p95_ms"] - timing["direct_p95_ms"]
    return figures


def print_single(run: dict) -> None:
    print(f"machine: {os.cpu_count()} CPUs; Gradio workspaces behind daphne (embedded default)")
    print(f"load average: {run['loadavg_start']} (start), {run['loadavg_end']} (end)")
    print()
    for label, key, fmt in FIGURES:
        print(f"  {label:58}{fmt.format(run[key]):>12}")
    for username, lines in run["phases"].items():
        print(f"  {username}'s process: {'; '.join(lines)}")
    print()
    for route, timing in run["proxy"].items():
        print(f"GET {route}  ({timing['requests']} requests each, alternating, keep-alive)")
        print(f"  {'':18}{'direct+secret':>14}{'via /ui/ proxy':>16}{'added':>10}")
        for label, kind in (("median ms", "median"), ("p95 ms", "p95")):
            d, p = timing[f"direct_{kind}_ms"], timing[f"proxy_{kind}_ms"]
            print(f"  {label:18}{d:14.2f}{p:16.2f}{p - d:10.2f}")
        print()


def print_side_by_side(baseline: list[dict], this: list[dict]) -> dict[str, dict[str, float]]:
    """Medians over the rounds, baseline beside this tree; returns them."""
    medians = {
        name: {key: statistics.median(flat(run)[key] for run in runs) for key in flat(runs[0])}
        for name, runs in (("baseline", baseline), ("this", this))
    }
    print(f"machine: {os.cpu_count()} CPUs; Gradio workspaces behind daphne (embedded default)")
    print(f"baseline: {baseline[0]['tree']}; this: {this[0]['tree']}; medians of {len(this)} rounds, baseline first in each")
    for index, (b, t) in enumerate(zip(baseline, this, strict=True)):
        print(f"  round {index + 1} load average: baseline {b['loadavg_start']} → {b['loadavg_end']}, "
              f"this {t['loadavg_start']} → {t['loadavg_end']}")
    print()
    print(f"  {'':58}{'baseline':>12}{'this':>12}")
    labels = {key: (label, fmt) for label, key, fmt in FIGURES}
    for key in medians["this"]:
        figure, _, route = key.partition(" ")  # proxy figures: "proxy_added_median_ms <route>"
        label, fmt = labels.get(key, (f"proxy added {figure.split('_')[2]}, GET {route}", "{:.2f} ms"))
        print(f"  {label:58}{fmt.format(medians['baseline'][key]):>12}{fmt.format(medians['this'][key]):>12}")
    print()
    for username, lines in this[-1]["phases"].items():
        print(f"  this, {username}'s process (last round): {'; '.join(lines)}")
    for username, lines in baseline[-1]["phases"].items():
        print(f"  baseline, {username}'s process (last round): {'; '.join(lines)}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout to measure in turns with this one")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)  # read by _tree() before the imports
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.json_only:
        print(json.dumps(measure(args.requests)))
        return
    if args.baseline_tree is None:
        run = measure(args.requests)
        print_single(run)
        print(json.dumps({"bench": "workspace", **{k: v for k, v in run.items() if k != "phases"}}))
        return
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    for _ in range(args.rounds):
        for name, tree in (("baseline", args.baseline_tree.resolve()), ("this", REPO)):
            command = [sys.executable, str(Path(__file__).resolve()), "--tree", str(tree), "--json-only",
                       "--requests", str(args.requests)]
            output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
            runs[name].append(json.loads(output.strip().splitlines()[-1]))
    medians = print_side_by_side(runs["baseline"], runs["this"])
    print(json.dumps({"bench": "workspace", "rounds": args.rounds, "medians": medians,
                      "loadavg": {name: [(r["loadavg_start"], r["loadavg_end"]) for r in rs] for name, rs in runs.items()}}))


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _phases(log: Path) -> list[str]:
    """The workspace process's own timing lines ("spare ready, imports took …", "… built in …")."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ["(no log)"]
    return [line.removeprefix("workspace: ") for line in lines if line.startswith("workspace: ")] or ["(no timings)"]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


if __name__ == "__main__":
    main()
