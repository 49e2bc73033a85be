"""The unmodified official SDK (`eas-prediction` 0.36 from PyPI) against a running platform.

Each test creates its own async service with `manage.py create_eas_service NAME --owner alice`
and drives it only through the SDK, in its own virtual environment (tests/e2e/eas_sdk.py), with
the client code of the seed document: `QueueClient(endpoint, f"{service}/sdapi/v1/txt2img")` +
`set_token` + `init()` + `put(body, tags={"task_id": ...})` for requests, and
`QueueClient(endpoint, f"{service}/sink")` + `watch(0, window, auto_commit=...)` + `commit(index)` +
`attributes()` for results. Only the endpoint and the token differ from the code a PAI-EAS user
runs. Jobs are 64x64 in 4 steps on the tiny model; where a job must stay in flight its prompt says
`hold:<name>` (tests/e2e/holding.py) until the test releases it.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.eas_sdk import SdkProcess, run_client, sdk_python
from tests.harness import Platform, running_platform, serving_png

pytestmark = pytest.mark.e2e

CHECKPOINT = "atelier-tiny.safetensors"


@pytest.fixture(scope="session")
def sdk() -> Path:
    """The SDK's python: its virtual environment is built once and cached in .cache/eas-sdk/."""
    return sdk_python()


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # img2img reads its input from `image_link` on the test's own loopback image server.
    with running_platform(workers=1, env_overrides={"ATELIER_FETCH_ALLOW_PRIVATE": "1"}) as platform:
        yield platform


@pytest.fixture(scope="module")
def image_link() -> Iterator[str]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, format="PNG")
    with serving_png(buffer.getvalue(), "boy.png") as url:
        yield url


class Service:
    """An async service made by the command, and the SDK client configs that reach it."""

    def __init__(self, platform: Platform, *options: str) -> None:
        self.name = f"sd_async_{uuid.uuid4().hex[:8]}"
        host = platform.base_url.removeprefix("http://")
        output = platform.manage("create_eas_service", self.name, "--owner", "alice", "--host", host, *options)
        printed = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
        assert printed.get("token"), output
        self.token = printed["token"].strip()
        self.endpoint = printed["endpoint"].strip()  # what QueueClient(endpoint, ...) takes: host:port
        assert self.endpoint == host, output

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "service": self.name, "token": self.token, **extra}


def request(prompt: str, steps: int = 4, **alwayson: Any) -> str:
    """A /sdapi/v1 body as the seed document writes it: JSON text with the EAS extras."""
    body = {"prompt": prompt, "steps": steps, "width": 64, "height": 64, "seed": 7,
            "alwayson_scripts": {"sd_model_checkpoint": CHECKPOINT, **alwayson}}
    return json.dumps(body)


def put(sdk: Path, service: Service, route: str, items: list[tuple[str, dict[str, str]]], **extra: Any) -> list[dict]:
    config = service.config(route=route, items=[{"body": body, "tags": tags} for body, tags in items], **extra)
    return run_client(sdk, "put", config)


def results_by_task(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The watcher's result lines, keyed by their task_id tag."""
    frames = [line for line in lines if "tags" in line and "index" in line]
    by_task = {frame["tags"]["task_id"]: frame for frame in frames}
    assert len(by_task) == len(frames), f"a task_id came twice: {frames}"
    return by_task


def assert_image(platform: Platform, result: dict[str, Any]) -> None:
    """The SD WebUI answer carries the 64x64 picture: base64 in `images`, or `image_url` (save_dir)."""
    if result["images"]:
        pictures = [base64.b64decode(image) for image in result["images"]]
    else:
        urls = result["parameters"]["image_url"].split(",")
        pictures = []
        for url in urls:
            download = httpx.get(url, headers=platform.headers("alice"), timeout=30)
            assert download.status_code == 200, (url, download.text)
            pictures.append(download.content)
    assert pictures and all(Image.open(io.BytesIO(data)).size == (64, 64) for data in pictures)


def test_sdk_puts_txt2img_and_img2img_with_tags_and_the_watcher_gets_every_result(
    platform: Platform, sdk: Path, image_link: str
) -> None:
    service = Service(platform)
    txt = put(sdk, service, "sdapi/v1/txt2img", [
        (request("cute dog", save_dir="tmp/outputs/txt2img"), {"task_id": "txt2img_0"}),
        (request("cute cat"), {"task_id": "txt2img_1"}),  # no save_dir: the image comes back as base64
    ])
    img = put(sdk, service, "sdapi/v1/img2img", [
        (request("cute girl", save_dir="tmp/outputs/img2img", image_link=image_link), {"task_id": "img2img_0"}),
    ])
    puts = txt + img
    assert all("error" not in line for line in puts), puts
    # put answers (index, requestId): the index as decimal text, increasing; a requestId each
    assert all(line["index"].isdigit() and line["request_id"] for line in puts), puts
    indexes = [int(line["index"]) for line in puts]
    assert indexes == sorted(indexes) and len(set(indexes)) == 3 and min(indexes) > 0
    request_ids = {line["tags"]["task_id"]: line["request_id"] for line in puts}
    assert len(set(request_ids.values())) == 3

    # The seed document's subscriber: watch(0, 5, auto_commit=False), commit(x.index) each.
    lines = run_client(sdk, "watch", service.config(window=5, auto_commit=False, commit=True, stop_after=3, attributes=True))
    results = results_by_task(lines)
    assert set(results) == set(request_ids)
    for task_id, frame in results.items():
        assert frame["tags"]["requestId"] == request_ids[task_id]
        assert frame["index"] > 0
        data = json.loads(frame["data"])
        assert data["parameters"]["status"] == 0, data["parameters"]
        assert data["parameters"]["error_msg"] == ""
        assert_image(platform, data)
    assert results["txt2img_0"]["tags"].get("lastCode", "200") == "200"
    assert {line["committed"] for line in lines if "committed" in line} == {f["index"] for f in results.values()}
    attributes = next(line["attributes"] for line in lines if "attributes" in line)
    assert attributes["stream.length"] == "0", attributes  # every result committed
    assert "meta.maxPayloadBytes" in attributes and attributes["meta.name"].startswith(service.name), attributes


def test_a_bad_body_comes_back_as_a_failed_result_never_a_silent_drop(platform: Platform, sdk: Path) -> None:
    service = Service(platform)
    puts = put(sdk, service, "sdapi/v1/txt2img", [
        ("this is not json {", {"task_id": "bad_json"}),
        (json.dumps({"prompt": "x", "steps": "many", "width": 64, "height": 64}), {"task_id": "bad_steps"}),
        (request("fine"), {"task_id": "good"}),
    ])
    assert all("error" not in line for line in puts), puts
    request_ids = {line["tags"]["task_id"]: line["request_id"] for line in puts}

    # §7.2's subscriber: watch(0, 5, auto_commit=True): results are committed as they are sent.
    lines = run_client(sdk, "watch", service.config(window=5, auto_commit=True, stop_after=3, attributes=True))
    results = results_by_task(lines)
    assert set(results) == set(request_ids)
    for task_id, frame in results.items():
        assert frame["tags"]["requestId"] == request_ids[task_id]
        parameters = json.loads(frame["data"])["parameters"]
        if task_id == "good":
            assert parameters["status"] == 0
        else:
            assert parameters["status"] != 0 and parameters["error_msg"], parameters
    assert "steps" in json.loads(results["bad_steps"]["data"])["parameters"]["error_msg"]
    attributes = next(line["attributes"] for line in lines if "attributes" in line)
    assert attributes["stream.length"] == "0", attributes


def test_a_consumer_that_drops_mid_stream_loses_no_result(platform: Platform, sdk: Path) -> None:
    service = Service(platform)
    hold = f"eas-drop-{uuid.uuid4().hex[:6]}"
    puts = put(sdk, service, "sdapi/v1/txt2img", [
        (request("one"), {"task_id": "drop_0"}),
        (request("two"), {"task_id": "drop_1"}),
        (request("three"), {"task_id": "drop_2"}),
        # still running when the consumer drops (3 steps: never batched with the others, which go on)
        (request(f"four hold:{hold}", steps=3), {"task_id": "drop_3"}),
    ])
    assert all("error" not in line for line in puts), puts
    request_ids = {line["tags"]["task_id"]: line["request_id"] for line in puts}

    # A consumer with window 2 that never commits: it holds two results, then vanishes (SIGKILL:
    # no close frame, the way a crashed client leaves).
    try:
        with SdkProcess(sdk, "watch", service.config(window=2, auto_commit=False, commit=False)) as first:
            held = first.take(2, timeout=120)
            assert all(frame["tags"]["task_id"] in request_ids for frame in held), held
            first.kill()
    finally:
        platform.release(hold)  # also when the above failed: the module's later tests need the worker
    # A new consumer (another uid) gets everything: the two uncommitted results again, the others new.
    lines = run_client(sdk, "watch", service.config(window=5, auto_commit=False, commit=True, stop_after=4, attributes=True))
    results = results_by_task(lines)
    assert set(results) == set(request_ids)
    for task_id, frame in results.items():
        assert frame["tags"]["requestId"] == request_ids[task_id]
        assert json.loads(frame["data"])["parameters"]["status"] == 0
    for frame in held:  # redelivered as they were: same sink index, same tags, same data
        again = results[frame["tags"]["task_id"]]
        assert (again["index"], again["tags"], again["data"]) == (frame["index"], frame["tags"], frame["data"])
    attributes = next(line["attributes"] for line in lines if "attributes" in line)
    assert attributes["stream.length"] == "0", attributes


def test_wrong_token_and_oversized_payload_are_refused(platform: Platform, sdk: Path) -> None:
    service = Service(platform, "--max-payload-bytes", "1024")
    other = Service(platform)
    wrong = service.config(token="not-the-token")
    # put: 401 on every attempt, then the SDK raises PredictException(401)
    [refused] = run_client(sdk, "put", {**wrong, "route": "sdapi/v1/txt2img", "items": [{"body": request("x"), "tags": {}}]})
    assert (refused["error"], refused["code"]) == ("PredictException", 401), refused
    # another service's token reaches only its own service's queues
    crossed = {**service.config(token=other.token), "route": "sdapi/v1/txt2img", "items": [{"body": request("x")}]}
    assert run_client(sdk, "put", crossed)[0]["code"] == 401
    [attrs] = run_client(sdk, "calls", {**wrong, "queue": "sink", "calls": [["attributes"]]})
    assert attrs.get("code") == 401, attrs
    # the websocket handshake is refused: the SDK's watcher raises before yielding anything
    watch = SdkProcess(sdk, "watch", {**wrong, "window": 5})
    try:
        answer = watch.next(timeout=60)
        assert answer["error"] == "WebSocketBadStatusException", answer
        assert watch.wait(timeout=30) == 3
    finally:
        watch.kill()
    # over the service's payload limit: 413, with a message
    big = request("y" * 2000)
    [too_big] = run_client(sdk, "put", service.config(route="sdapi/v1/txt2img", items=[{"body": big, "tags": {}}]))
    assert (too_big["error"], too_big["code"]) == ("PredictException", 413), too_big
    assert too_big["message"], too_big
    # nothing of the above reached the queues
    [attrs] = run_client(sdk, "calls", service.config(queue="", calls=[["attributes"]]))
    assert attrs["result"]["stream.length"] == "0", attrs


def test_a_full_sink_holds_new_requests_until_results_are_committed(platform: Platform, sdk: Path) -> None:
    service = Service(platform, "--max-sink-uncommitted", "1")
    [first] = put(sdk, service, "sdapi/v1/txt2img", [(request("first"), {"task_id": "bp_0"})])

    def sink_holds_one() -> bool:
        [line] = run_client(sdk, "calls", service.config(queue="sink", calls=[["attributes"]]))
        return line["result"].get("stream.length", "") == "1"

    platform.wait_until(sink_holds_one, timeout=120, what="the first result in the sink", interval=0.5)
    # The sink holds its maximum: the next request waits instead of running.
    [second] = put(sdk, service, "sdapi/v1/txt2img", [(request("second"), {"task_id": "bp_1"})])
    [attributes, position] = run_client(sdk, "calls", service.config(
        queue="", calls=[["attributes"], ["search", int(second["index"])]],
    ))
    assert attributes["result"]["stream.waiting"] == "1", attributes
    assert position["result"].get("IsPending") is False, position

    # Committing the first result lets the second run; the subscriber receives both.
    lines = run_client(sdk, "watch", service.config(window=5, auto_commit=False, commit=True, stop_after=2))
    results = results_by_task(lines)
    assert {task: frame["tags"]["requestId"] for task, frame in results.items()} == {
        "bp_0": first["request_id"], "bp_1": second["request_id"],
    }
