"""The deployment files in docker/ name only things the project has.

Nothing here can be built or applied (no container daemon, no cluster), so the manifests are
checked against the code instead: `kubectl kustomize` renders the base and the GPU overlay
(kubectl must be installed: a missing kubectl fails these tests, it never skips them), the compose
file and the Dockerfiles are parsed, and for every container:

* its image is one a Dockerfile here builds (`LABEL org.opencontainers.image.title`), or a
  third-party server image in the compose file (PostgreSQL, Redis, MinIO);
* its command is one of the platform's own command lines (`inference/processes.py`), a
  management command that exists and accepts those arguments, or a module that imports;
* its container port is the port its command listens on, and named ports resolve;
* every environment variable it sets is one `config/settings.py` reads (or a runtime variable
  of Python, Django or the NVIDIA container runtime);
* its HTTP probe paths resolve in the URLconf, its exec probes are commands as above;
* Services, the Ingress, PodDisruptionBudgets, the ScaledObject and the ServiceMonitor point at
  objects, ports and metrics that exist.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference.processes import sweeper_command, web_command, worker_command

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
KUSTOMIZATIONS = ("docker/k8s/base", "docker/k8s/overlays/gpu")
THIRD_PARTY_IMAGES = ("postgres", "redis", "minio/minio", "minio/mc")  # servers the compose file runs as they are
RUNTIME_ENV = {"DJANGO_SETTINGS_MODULE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PATH",
               "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


# --- what the project has -------------------------------------------------------------------------

def settings_env_names() -> set[str]:
    source = (REPO / "config" / "settings.py").read_text()
    names = set(re.findall(r'env\.(?:str|int|float|bool|list|db)\(\s*"([A-Z][A-Z0-9_]*)"', source))
    names |= set(re.findall(r'_strict_bool\(\s*"([A-Z][A-Z0-9_]*)"', source))
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ATELIER_HTTPS"} <= names  # the parse itself works
    return names


def dockerfiles() -> dict[str, dict[str, Any]]:
    """image name -> {path, cmd, env, expose} for each docker/Dockerfile.*."""
    built: dict[str, dict[str, Any]] = {}
    for path in sorted(DOCKER.glob("Dockerfile.*")):
        text = re.sub(r"\\\n", " ", path.read_text())
        title = re.search(r'^LABEL\s+org\.opencontainers\.image\.title="([^"]+)"', text, re.M)
        assert title, f"{path.name}: no LABEL org.opencontainers.image.title naming the image it builds"
        cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M)
        assert cmd, f"{path.name}: no exec-form CMD"
        env = {name for line in re.findall(r"^ENV\s+(.*)$", text, re.M) for name in re.findall(r"([A-Z_][A-Z0-9_]*)=", line)}
        expose = [int(p) for p in re.findall(r"^EXPOSE\s+(\d+)", text, re.M)]
        built[title[1]] = {"path": path, "cmd": json.loads(cmd[1]), "env": env, "expose": expose}
    assert {"atelier/web", "atelier/worker-gpu", "atelier/worker-cpu"} <= set(built)
    return built


def render(kustomization: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed: these tests render the manifests with `kubectl kustomize` (never skipped)"
    result = subprocess.run([kubectl, "kustomize", str(REPO / kustomization)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


# --- checking one command ------------------------------------------------------------------------

def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def listening_port(argv: list[str]) -> int | None:
    """The port a web command line listens on (`-p N`), else None."""
    if argv[:3] == ["python", "-m", "config.webserver"]:
        return int(argv[argv.index("-p") + 1])
    return None


def check_command(argv: list[str], where: str) -> None:
    """`argv` is a platform command line, an existing management command with valid arguments,
    or a module that imports."""
    assert argv and argv[0] == "python", f"{where}: {argv} does not start with the image's python"
    if argv[1:3] == ["manage.py", argv[2] if len(argv) > 2 else ""]:
        from django.core.management import get_commands, load_command_class

        name, rest = argv[2], argv[3:]
        commands = get_commands()
        assert name in commands, f"{where}: manage.py {name} is not a management command"
        parser = load_command_class(commands[name], name).create_parser("manage.py", name)
        from django.core.management.base import CommandError

        try:
            parser.parse_args(rest)
        except (SystemExit, CommandError):
            pytest.fail(f"{where}: manage.py {name} refuses the arguments {rest}")
        if name == "sweeper" and not rest:
            assert argv == ["python", *sweeper_command()[1:]], f"{where}: not inference.processes.sweeper_command()"
        return
    if argv[1] == "-m":
        module = argv[2]
        assert _module_exists(module), f"{where}: python -m {module}: no such module"
        if module == "config.webserver":
            host, port = argv[argv.index("-b") + 1], int(argv[argv.index("-p") + 1])
            assert argv == ["python", *web_command(host, port)[1:]], f"{where}: not inference.processes.web_command()"
            assert _module_exists(argv[-1].split(":")[0]), f"{where}: no ASGI module {argv[-1]}"
        elif module == "celery":
            name = argv[argv.index("-n") + 1]
            assert argv == ["python", *worker_command(name)[1:]], f"{where}: not inference.processes.worker_command()"
            assert _module_exists(argv[argv.index("-A") + 1] + ".celery"), f"{where}: no Celery app"
        return
    if argv[1] == "-c":  # an inline health check: the URL paths it calls must resolve
        paths = re.findall(r"http://[\w.\-]+:\d+(/[\w\-/]*)", argv[2])
        assert paths, f"{where}: python -c calls no local URL"
        for path in paths:
            check_http_path(path, where)
        return
    pytest.fail(f"{where}: {argv} is neither manage.py, python -m nor python -c")


def check_http_path(path: str, where: str) -> None:
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path)
    except Resolver404:
        pytest.fail(f"{where}: {path} does not resolve in the URLconf")
    assert match.url_name in ("healthz", "readyz", "metrics"), f"{where}: {path} is not a probe or metrics route"


# --- the Kubernetes objects ----------------------------------------------------------------------

def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]


def containers(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from template["spec"].get("initContainers", [])
    yield from template["spec"]["containers"]


def image_name(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_every_container_runs_a_built_image_and_a_command_the_project_has(rendered) -> None:
    name, docs = rendered
    built = dockerfiles()
    templates = list(pod_templates(docs))
    assert {w["metadata"]["name"] for w, _ in templates} >= {"atelier-web", "atelier-sweeper", "atelier-worker"}
    for workload, template in templates:
        for container in containers(template):
            where = f"{name}: {workload['metadata']['name']}/{container['name']}"
            assert image_name(container["image"]) in built, f"{where}: image {container['image']} is built by no Dockerfile"
            check_command(container["command"], where)


def test_container_ports_are_what_the_commands_listen_on(rendered) -> None:
    name, docs = rendered
    for workload, template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            where = f"{name}: {workload['metadata']['name']}/{container['name']}"
            port = listening_port(container["command"])
            declared = {p["containerPort"] for p in container.get("ports", [])}
            assert declared == ({port} if port else set()), f"{where}: ports {declared}, command listens on {port}"


def test_every_environment_variable_is_one_the_settings_read(rendered) -> None:
    name, docs = rendered
    known = settings_env_names()
    config_maps = _by_kind(docs, "ConfigMap")
    for workload, template in pod_templates(docs):
        for container in containers(template):
            where = f"{name}: {workload['metadata']['name']}/{container['name']}"
            names = [entry["name"] for entry in container.get("env", [])]
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                assert ref in config_maps, f"{where}: envFrom names a ConfigMap {ref!r} that is not rendered"
                names += list(config_maps[ref]["data"])
            unknown = sorted(set(names) - known - RUNTIME_ENV)
            assert not unknown, f"{where}: config/settings.py reads no {unknown}"
            for entry in container.get("env", []):
                secret = entry.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    assert secret["key"] == entry["name"], f"{where}: {entry['name']} from secret key {secret['key']}"


def test_probes_name_routes_and_commands_that_exist(rendered) -> None:
    name, docs = rendered
    for workload, template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            where = f"{name}: {workload['metadata']['name']}/{container['name']}"
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            assert "livenessProbe" in container and "readinessProbe" in container, f"{where}: needs both probes"
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                if "httpGet" in probe:
                    check_http_path(probe["httpGet"]["path"], f"{where} {kind}")
                    port = probe["httpGet"]["port"]
                    assert port in ports or port in ports.values(), f"{where} {kind}: no container port {port}"
                else:
                    command = probe["exec"]["command"]
                    check_command(command, f"{where} {kind}")
                    assert command[2] == "probe" and ("--live" in command) == (kind == "livenessProbe")
                    if "-n" in command:  # the worker's own node name, as its celery -n gives it
                        main = container["command"]
                        assert command[command.index("-n") + 1] == main[main.index("-n") + 1], f"{where} {kind}"


def test_services_ingress_budgets_and_autoscaling_point_at_what_exists(rendered) -> None:
    name, docs = rendered
    templates = {w["metadata"]["name"]: t for w, t in pod_templates(docs)}
    services = _by_kind(docs, "Service")
    for service in services.values():
        pods = [t for t in templates.values() if _selects(service["spec"]["selector"], t["metadata"]["labels"])]
        assert pods, f"{name}: Service {service['metadata']['name']} selects no pods"
        ports = {p["name"] for t in pods for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: Service port {port} targets no container port"
    for ingress in _by_kind(docs, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, f"{name}: Ingress backend {backend['name']} is no Service"
                assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
    budgets = _by_kind(docs, "PodDisruptionBudget")
    for deployment in ("atelier-web", "atelier-sweeper", "atelier-worker"):
        assert any(_selects(b["spec"]["selector"]["matchLabels"], templates[deployment]["metadata"]["labels"])
                   for b in budgets.values()), f"{name}: no PodDisruptionBudget for {deployment}"
    worker = templates["atelier-worker"]["spec"]
    assert worker["terminationGracePeriodSeconds"] >= 300, "workers need a batch's time to drain on SIGTERM"

    exported = set(re.findall(r'"(atelier_[a-z_]+)"', (REPO / "inference" / "metrics.py").read_text()))
    scaled = _by_kind(docs, "ScaledObject")
    assert scaled, f"{name}: no KEDA ScaledObject"
    for scaled_object in scaled.values():
        target = scaled_object["spec"]["scaleTargetRef"]["name"]
        assert target in templates, f"{name}: ScaledObject scales {target}, which is not rendered"
        assert scaled_object["spec"]["minReplicaCount"] == 0, "scale to zero"
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["type"] == "prometheus"
            used = set(re.findall(r"\b(atelier_[a-z_]+)\b", trigger["metadata"]["query"]))
            assert "atelier_queue_depth" in used and used <= exported, f"{name}: the query names {used - exported}"
    for monitor in _by_kind(docs, "ServiceMonitor").values():
        for endpoint in monitor["spec"]["endpoints"]:
            check_http_path(endpoint["path"], f"{name}: ServiceMonitor")
            assert any(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services.values())


def test_the_gpu_overlay_runs_cuda_workers_with_one_gpu_each() -> None:
    docs = render("docker/k8s/overlays/gpu")
    worker = next(t for w, t in pod_templates(docs) if w["metadata"]["name"] == "atelier-worker")
    container = worker["spec"]["containers"][0]
    assert image_name(container["image"]) == "atelier/worker-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ATELIER_DEVICE"] == "cuda" and env["ATELIER_WORKER_ATTENTION"] == "xformers"
    assert "SECRET_KEY" in env and "DATABASE_URL" in env  # the base's secrets survive the patch


# --- the Dockerfiles and the compose file ------------------------------------------------------------

def test_dockerfiles_run_platform_commands_and_set_only_known_variables() -> None:
    known = settings_env_names() | RUNTIME_ENV
    for image, built in dockerfiles().items():
        check_command(built["cmd"], f"{built['path'].name} CMD")
        assert built["env"] <= known, f"{built['path'].name}: config/settings.py reads no {built['env'] - known}"
        port = listening_port(built["cmd"])
        assert built["expose"] == ([port] if port else []), f"{built['path'].name}: EXPOSE {built['expose']}, listens on {port}"
    gpu = dockerfiles()["atelier/worker-gpu"]["path"].read_text()
    assert '".[gpu]"' in gpu, "the GPU worker installs the gpu extra (xformers)"


def test_the_compose_file_names_built_images_platform_commands_and_known_variables() -> None:
    known = settings_env_names() | RUNTIME_ENV
    built = dockerfiles()
    services = compose()["services"]
    assert {"postgres", "redis", "minio", "web", "sweeper", "worker"} <= set(services)
    for name, service in services.items():
        image = image_name(service["image"])
        if image in THIRD_PARTY_IMAGES:
            assert "build" not in service
            continue
        where = f"compose {name}"
        assert image in built, f"{where}: image {image} is built by no Dockerfile"
        dockerfile = REPO / service["build"]["dockerfile"]
        assert dockerfile == built[image]["path"], f"{where}: builds {dockerfile.name}, but {image} comes from another"
        check_command(service["command"], where)
        unknown = sorted(set(service.get("environment", {})) - known)
        assert not unknown, f"{where}: config/settings.py reads no {unknown}"
        port = listening_port(service["command"])
        published = {int(str(p).rsplit(":", 1)[1]) for p in service.get("ports", [])}
        assert published == ({port} if port else set()), f"{where}: publishes {published}, listens on {port}"
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            assert test[0] == "CMD"
            check_command(test[1:], f"{where} healthcheck")
        if name.startswith("worker"):
            assert "stop_grace_period" in service, f"{where}: a worker needs a batch's time to drain"


def test_the_manifest_checks_catch_what_they_claim(settings) -> None:
    """The checks themselves: a made-up command, argument, route, variable and port all fail."""
    for argv in (["python", "manage.py", "no_such_command"], ["python", "manage.py", "probe", "worker", "--sideways"],
                 ["python", "-m", "no.such.module"], shlex.split("python -m celery -A config worker -n x@%h"),
                 ["python", "manage.py", "probe", "worker", "--live", "--ready"]):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_command(argv, "made up")
    with pytest.raises(pytest.fail.Exception):
        check_http_path("/livez", "made up")
    assert "ATELIER_NO_SUCH_SETTING" not in settings_env_names()
    assert listening_port(["python", *web_command("0.0.0.0", 8123)[1:]]) == 8123
