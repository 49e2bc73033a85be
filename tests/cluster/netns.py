"""Separate hosts on this one machine, for multi-host tests: network namespaces, veth links, relays.

The control host is the root namespace: the web server, the dispatcher (`manage.py sweeper`),
PostgreSQL, a private Redis and the S3-compatible server (moto) run there. Each worker host is a
network namespace joined to the control host by a veth pair of its own (`10.<net>.<n>.1` on the
control side, `.2` inside), with its own empty-but-for-models DATA_DIR.

The machine's PostgreSQL, the private Redis and moto listen on loopback only, so each worker host
reaches them through `Relay`s: small TCP forwarders that run in this (root-namespace) process,
one per host and service, bound on that host's control-side veth address. A relay is also how a
test cuts one host from one service (`Relay.cut`: its connections reset, new ones refused);
`WorkerHost.link_down` cuts the host's whole link (`ip link set … down`): packets are dropped,
nothing is reset, as when a cable is pulled.

`PrivateRedis` is a `redis-server` of the test's own (`--save ""`, no AOF): restarting it loses
every queued message, which is the fault the test wants, and touches no other test's Redis.

Every namespace and veth is named with a per-run suffix and removed by `Cluster.close()` (the test
fixture's finaliser), so two runs never collide and a failed run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from inference.processes import sweeper_command, web_command, worker_command
from tests.harness import Platform, free_port
from tests.objectstore import MotoServer


def netns_available() -> str | None:
    """Why this machine cannot build hosts (None: it can): root and a working `ip netns`."""
    if os.geteuid() != 0:
        return "needs root (ip netns, veth pairs)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (the test runs a private one)"
    probe = f"atl-probe-{secrets.token_hex(3)}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "`ip netns add` is not permitted here"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


# --- relays -----------------------------------------------------------------------------------


class Relay:
    """A TCP forwarder `listen` → `target`, run on the `RelayLoop`'s event loop; `cut()` resets its
    connections and refuses new ones until `restore()`."""

    def __init__(self, loop: RelayLoop, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.loop, self.listen, self.target = loop, listen, target
        self.writers: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.server = loop.call(self._start())

    async def _start(self) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, *self.listen, reuse_address=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.transport.abort() if self.is_cut else sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> None:
        async def reset() -> None:
            self.is_cut = True
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()

        self.loop.call(reset())

    def restore(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self.cut()
        self.server.close()


class RelayLoop:
    """One asyncio loop in a daemon thread that runs every relay of a cluster."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relays", daemon=True)
        self.thread.start()

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


# --- the private Redis ------------------------------------------------------------------------


class PrivateRedis:
    """`redis-server` on loopback for one test; `restart()` loses its data (`--save ""`, no AOF)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.folder)],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        Platform.wait_until(self._answers, timeout=15, what="the private redis-server")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """kill -9 and start again on the same port: every queue and unacked message is gone."""
        self.kill()
        self.start()


# --- hosts ------------------------------------------------------------------------------------


@dataclass
class WorkerHost:
    """A network namespace with one veth link to the control host, and its own DATA_DIR."""

    name: str  # the namespace
    index: int
    control_address: str  # the control side of the link: what this host's relays listen on
    address: str
    veth: str  # the control-side end (what `link_down` sets down)
    data_dir: Path
    relays: dict[str, Relay] = field(default_factory=dict)  # "postgres", "redis", "s3"

    def link_down(self) -> None:
        _ip("link", "set", self.veth, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.veth, "up")

    def command(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def reaches(self, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from inside this host to the control host's `port` opens."""
        probe = f"import socket; socket.create_connection(('{self.control_address}', {port}), timeout={timeout}).close()"
        result = subprocess.run(self.command(["python3", "-c", probe]), capture_output=True, timeout=timeout + 10)
        return result.returncode == 0


class Cluster:
    """A control host (this namespace) with `hosts` worker hosts, a private Redis and a moto S3,
    around a `Platform` whose web server and sweeper run on the control host."""

    def __init__(self, hosts: int = 2, *, env_overrides: dict[str, str] | None = None) -> None:
        self.suffix = secrets.token_hex(3)
        self.net = 100 + secrets.randbelow(150)  # 10.<net>.<n>.0/30 per host
        self.relays = RelayLoop()
        self.hosts: list[WorkerHost] = []
        self.moto = MotoServer().start()
        self.bucket = self.moto.bucket_create("cluster")
        self.platform = Platform(env_overrides=dict(env_overrides or {}))
        self.redis = PrivateRedis(self.platform.data_dir / "redis")
        self.redis.start()
        self.platform.env_overrides.update(REDIS_URL=self.redis.url, **self.moto.storage_environment(self.bucket))
        try:
            for index in range(1, hosts + 1):
                self._host_add(index)
        except BaseException:
            self.close()
            raise

    def _host_add(self, index: int) -> WorkerHost:
        name, veth = f"atl{self.suffix}h{index}", f"atl{self.suffix}v{index}"
        control, inside = f"10.{self.net}.{index}.1", f"10.{self.net}.{index}.2"
        _ip("netns", "add", name)
        host = WorkerHost(name=name, index=index, control_address=control, address=inside, veth=veth,
                          data_dir=self.platform.data_dir / "hosts" / f"host{index}")
        self.hosts.append(host)  # torn down by close() from here on, even if a step below fails
        _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _ip("link", "set", f"{veth}p", "netns", name)
        _ip("addr", "add", f"{control}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{inside}/30", "dev", f"{veth}p")
        _ip("netns", "exec", name, "ip", "link", "set", f"{veth}p", "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        return host

    # --- the platform's processes ---------------------------------------------------------
    def start(self) -> Cluster:
        """Prepare the platform, wire each host's relays and DATA_DIR, start web + sweeper here."""
        port = self.platform.prepare()
        database = urlsplit(self.platform.env()["DATABASE_URL"])
        for host in self.hosts:
            host.relays = {
                "postgres": Relay(self.relays, (host.control_address, 0), (database.hostname or "127.0.0.1", database.port or 5432)),
                "redis": Relay(self.relays, (host.control_address, 0), ("127.0.0.1", self.redis.port)),
                "s3": Relay(self.relays, (host.control_address, 0), ("127.0.0.1", self.moto.port)),
            }
            self._host_data_dir(host)
        self.platform._spawn("web", web_command("127.0.0.1", port))
        self.platform._spawn("sweeper", sweeper_command(), worker=True)  # the dispatcher
        self.platform.wait_until(self.platform._web_up, timeout=60, what="the web server")
        return self

    def _host_data_dir(self, host: WorkerHost) -> None:
        host.data_dir.mkdir(parents=True, exist_ok=True)
        # Holds (tests/e2e/holding.py) are read from DATA_DIR/holds: one folder for every host, so
        # `Platform.release` lets a held job go wherever it runs.
        (self.platform.data_dir / "holds").mkdir(exist_ok=True)
        (host.data_dir / "holds").symlink_to(self.platform.data_dir / "holds")
        # Nothing else: a worker host's DATA_DIR holds no model. Workers fetch every model a job
        # names from the bucket into their own cache (inference/model_cache.py).

    def host_env(self, host: WorkerHost) -> dict[str, str]:
        """A worker's environment on `host`: its DATA_DIR, and every service through its relays."""
        env = self.platform.env(worker=True)
        database = urlsplit(env["DATABASE_URL"])
        relay = {name: f"{host.control_address}:{r.server.sockets[0].getsockname()[1]}" for name, r in host.relays.items()}
        env.update(
            DATA_DIR=str(host.data_dir),
            DATABASE_URL=urlunsplit((database.scheme, f"{database.username or 'postgres'}@{relay['postgres']}",
                                     database.path, database.query, "")),
            REDIS_URL=f"redis://{relay['redis']}/0",
            ATELIER_S3_ENDPOINT_URL=f"http://{relay['s3']}",
            # Several workers share this machine's few cores, where torch's spinning intra-op
            # threads make the tiny model 10-50x slower (tests/conftest.py `one_torch_thread`).
            OMP_NUM_THREADS="1",
        )
        return env

    def start_with_workers(self) -> Cluster:
        """`start()`, then one worker on each host, and wait until all are online."""
        self.start()
        for host in self.hosts:
            self.start_worker(host)
        self.platform.wait_for_workers(len(self.hosts))
        return self

    def start_worker(self, host: WorkerHost, short: str | None = None) -> str:
        """A Celery worker (the holding app, tests/e2e/holding.py) on `host`; returns its role name."""
        role = short or f"w{host.index}"
        command = worker_command(self.platform.worker_name(role), app="tests.e2e.holding")
        self.platform._spawn(role, host.command(command), env=self.host_env(host))  # `ip netns exec` execs it: same pid
        return role

    def worker_log(self, role: str) -> str:
        return (self.platform.data_dir / f"{role}.log").read_text(errors="replace")

    # --- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.platform.stop()
        finally:
            for host in self.hosts:
                for relay in host.relays.values():
                    try:
                        relay.close()
                    except Exception:  # noqa: BLE001 - tear down the rest regardless
                        pass
                subprocess.run(["ip", "link", "delete", host.veth], capture_output=True)
                subprocess.run(["ip", "netns", "delete", host.name], capture_output=True)
            self.relays.close()
            self.redis.kill()
            self.moto.stop()
