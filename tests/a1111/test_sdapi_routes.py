"""/sdapi/v1 routes through Django's full stack on the real database: auth, per-member scoping,
options, progress and interrupt, and bad input in A1111's error shape. (Generation itself runs
in tests/e2e/test_a1111_client.py, against real workers.)"""

from __future__ import annotations

import shutil

import pytest
from django.conf import settings

from a1111.generation import GenerationRequest
from inference.jobspec import JobSpec
from inference.models import Job

pytestmark = pytest.mark.django_db

ROUTES_GET = [
    "progress", "options", "cmd-flags", "samplers", "schedulers", "upscalers", "latent-upscale-modes", "sd-models",
    "sd-vae", "loras", "hypernetworks", "embeddings", "face-restorers", "realesrgan-models", "prompt-styles",
    "script-info", "extensions", "scripts", "memory",
]
ROUTES_POST = [
    "txt2img", "interrogate", "interrupt", "skip", "options", "refresh-checkpoints", "refresh-loras", "refresh-vae",
    "refresh-embeddings", "unload-checkpoint", "reload-checkpoint",
]


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint_path):
    return tiny_checkpoint_path


@pytest.fixture
def alices_model(personas, tiny_checkpoint_path):
    path = settings.DATA_DIR / "users" / "alice" / "models" / "Stable-diffusion" / "alice-style.safetensors"
    shutil.copy(tiny_checkpoint_path, path)
    with path.open("ab") as handle:  # another hash than the public one
        handle.write(b"\0")
    yield path
    path.unlink()


@pytest.mark.parametrize("route", ROUTES_GET)
def test_every_get_route_needs_a_token_and_answers_json(api, route) -> None:
    response = api(None).get(f"/sdapi/v1/{route}")
    assert response.status_code == 401
    assert set(response.json()) == {"error", "detail", "body", "errors"}
    response = api("bob").get(f"/sdapi/v1/{route}")
    assert response.status_code == 200, response.content
    response.json()


@pytest.mark.parametrize("route", ROUTES_POST)
def test_every_post_route_needs_a_token(api, route) -> None:
    assert api(None).post(f"/sdapi/v1/{route}", {}).status_code == 401


def test_basic_auth_with_username_and_token_as_a1111_clients_send_it(client, tokens) -> None:
    import base64

    basic = base64.b64encode(f"alice:{tokens['alice']}".encode()).decode()
    assert client.get("/sdapi/v1/sd-models", HTTP_AUTHORIZATION=f"Basic {basic}").status_code == 200
    assert client.get("/sdapi/v1/sd-models", HTTP_AUTHORIZATION=tokens["alice"]).status_code == 200  # EAS style


def test_models_are_scoped_to_the_member(api, alices_model) -> None:
    alice = [m["title"].split(" [")[0] for m in api("alice").get("/sdapi/v1/sd-models").json()]
    charlie = [m["title"].split(" [")[0] for m in api("charlie").get("/sdapi/v1/sd-models").json()]
    assert alice == ["alice-style.safetensors", "atelier-tiny.safetensors"]
    assert charlie == ["atelier-tiny.safetensors"]
    model = api("alice").get("/sdapi/v1/sd-models").json()[0]
    assert model["filename"] == "user/alice-style.safetensors" and str(settings.DATA_DIR) not in str(model)
    assert len(model["hash"]) == 10 and model["sha256"].startswith(model["hash"])


def test_options_are_per_member(api, alices_model) -> None:
    public = next(m["title"] for m in api("bob").get("/sdapi/v1/sd-models").json())
    mine = next(m for m in api("alice").get("/sdapi/v1/sd-models").json() if m["model_name"] == "alice-style")
    assert api("alice").get("/sdapi/v1/options").json()["sd_model_checkpoint"] == mine["title"]  # own first
    response = api("alice").post("/sdapi/v1/options", {"sd_model_checkpoint": public})
    assert response.status_code == 200 and response.json() is None
    options = api("alice").get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == public
    assert api("bob").get("/sdapi/v1/options").json()["sd_model_checkpoint"] == public  # untouched default
    # webuiapi's util_set_model sends a title; any A1111 id form resolves.
    assert api("alice").post("/sdapi/v1/options", {"sd_model_checkpoint": "alice-style"}).status_code == 200
    assert api("alice").get("/sdapi/v1/options").json()["sd_model_checkpoint"] == mine["title"]
    # charlie cannot name alice's model, even by its exact title.
    response = api("charlie").post("/sdapi/v1/options", {"sd_model_checkpoint": mine["title"]})
    assert response.status_code == 404 and "unknown checkpoint" in response.json()["detail"]


def test_progress_and_interrupt_touch_only_the_callers_jobs(api, personas) -> None:
    idle = api("alice").get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None

    job_id = api("alice").post("/api/v1/jobs", {"prompt": "x", "steps": 10}).json()["id"]
    Job.objects.filter(public_id=job_id).update(status="running", step=5, total_steps=10, progress=0.5)
    from django.utils import timezone

    Job.objects.filter(public_id=job_id).update(started_at=timezone.now())
    mine = api("alice").get("/sdapi/v1/progress").json()
    assert mine["state"]["job_count"] == 1 and mine["state"]["sampling_step"] == 5 and mine["progress"] > 0.5
    assert api("bob").get("/sdapi/v1/progress").json()["state"]["job_count"] == 0

    assert api("bob").post("/sdapi/v1/interrupt").status_code == 200
    assert not Job.objects.get(public_id=job_id).cancel_requested
    assert api("alice").post("/sdapi/v1/interrupt").json() == {}
    assert Job.objects.get(public_id=job_id).cancel_requested


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("{broken", "not valid JSON"),
        ("[1]", "JSON object"),
        ({"steps": 0}, "steps"),
        ({"width": -512}, "width"),
        ({"width": 50000, "height": 50000}, "width"),
        ({"cfg_scale": "much"}, "cfg_scale"),
        ({"batch_size": 1000}, "batch_size"),
    ],
)
def test_bad_txt2img_input_is_a_4xx_in_a1111s_error_shape(api, body, needle) -> None:
    response = api("alice").post("/sdapi/v1/txt2img", body)
    assert response.status_code == 422
    payload = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"} and needle in payload["detail"]
    assert not Job.objects.exists()


def test_unknown_model_is_a_404_naming_it(api) -> None:
    response = api("alice").post("/sdapi/v1/txt2img", {"override_settings": {"sd_model_checkpoint": "nope"}})
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_unknown_sampler_falls_back_as_a1111_does() -> None:
    from a1111.generation import parse_generation_request

    assert parse_generation_request({"sampler_name": "Warp drive"}, lenient_sampler=True).sampler_name == "DPM++ 2M"


def test_png_info_reads_an_a1111_png_and_refuses_bad_images(api) -> None:
    import base64
    import io

    from PIL import Image, PngImagePlugin

    text = 'cpc explosion, <lora:207:1>\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 966911465, Size: 512x512, Model hash: 15012c538f, Model: realisticVisionV51_v51VAE, Clip skip: 2'
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    payload = api("bob").post("/sdapi/v1/png-info", {"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}).json()
    assert payload["info"] == text
    assert payload["parameters"]["Seed"] == "966911465" and payload["parameters"]["Size-1"] == "512"
    assert payload["parameters"]["Clip skip"] == "2" and payload["parameters"]["Prompt"].startswith("cpc explosion")
    for bad in ({"image": "not base64!!"}, {"image": ""}, {}, {"image": "http://127.0.0.1/x.png"}):
        response = api("bob").post("/sdapi/v1/png-info", bad)
        assert response.status_code == 422, bad
        assert set(response.json()) == {"error", "detail", "body", "errors"}


# --- img2img and the PAI-EAS extras: bad input never makes a job, a file or a request ---------


def _png_b64(size=(64, 64), color=(200, 30, 30)) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _bomb_b64() -> str:
    """A valid few-KB PNG that claims 50000 x 50000 pixels: decoding it would need 7.5 GB."""
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * 50000) * 8)  # a few rows; the header is what matters
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


@pytest.fixture
def listener():
    """A loopback HTTP server that records every request: SSRF tests assert it saw none."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def _assert_refused(response, status: int, needle: str) -> None:
    assert response.status_code == status, response.content
    payload = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"}
    assert needle in payload["detail"], payload["detail"]
    assert not Job.objects.exists()


def test_img2img_without_an_init_image_is_a1111s_404(api) -> None:
    _assert_refused(api("alice").post("/sdapi/v1/img2img", {"prompt": "x"}), 404, "Init image not found")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"init_images": ["not base64!!"]}, 422, "init_images[0]"),
        ({"init_images": "abc"}, 422, "must be a list"),
        ({"init_images": [_png_b64()], "denoising_strength": 1.5}, 422, "denoising_strength"),
        ({"init_images": [_png_b64()], "resize_mode": 7}, 422, "resize_mode"),
        ({"init_images": [_png_b64()], "inpainting_fill": -1}, 422, "inpainting_fill"),
        ({"init_images": [_png_b64(), _png_b64()], "batch_size": 1}, 422, "at most 1"),
        ({"init_images": [_png_b64()], "mask": _png_b64((32, 32))}, 422, "same size"),
        ({"init_images": [_bomb_b64()]}, 422, "pixels"),
        ({"init_images": [_png_b64()], "override_settings": {"sd_vae": "no-such-vae"}}, 404, "no-such-vae"),
        ({"init_images": [_png_b64()], "alwayson_scripts": {"sd_model_checkpoint": "nope"}}, 404, "nope"),
        ({"init_images": ["file:///etc/passwd"]}, 422, "only http and https"),
    ],
)
def test_bad_img2img_input_is_a_4xx_naming_the_problem(api, body, status, needle) -> None:
    _assert_refused(api("alice").post("/sdapi/v1/img2img", body), status, needle)


def test_a_20_mb_image_is_refused_before_decoding(api) -> None:
    import base64

    huge = base64.b64encode(b"\x89PNG" + b"\0" * (15 * 1024 * 1024)).decode()  # 20 MB of base64
    _assert_refused(api("alice").post("/sdapi/v1/img2img", {"init_images": [huge]}), 422, "limit")


def test_a_body_over_the_request_limit_is_a_413(api, settings) -> None:
    settings.ATELIER_MAX_REQUEST_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    body = {"init_images": ["A" * (2 * 1024 * 1024)]}
    _assert_refused(api("alice").post("/sdapi/v1/img2img", body), 413, "send large images as http(s) URLs")


@pytest.mark.parametrize("save_dir", ["../../etc", "/etc", "tmp/../../x", "~/x", "C:\\temp", "models/Lora", ".."])
def test_save_dir_outside_the_members_directory_is_refused(api, settings, save_dir) -> None:
    before = sorted(p for p in settings.DATA_DIR.rglob("*"))
    body = {"prompt": "x", "alwayson_scripts": {"save_dir": save_dir}}
    _assert_refused(api("alice").post("/sdapi/v1/txt2img", body), 422, "save_dir")
    assert sorted(p for p in settings.DATA_DIR.rglob("*")) == before  # nothing written anywhere


@pytest.mark.parametrize("path", ["/", "/admin", "/latest/meta-data"])
def test_image_link_to_a_private_address_is_refused_unfetched(api, listener, path) -> None:
    url, seen = listener
    body = {"alwayson_scripts": {"image_link": url + path}}
    _assert_refused(api("alice").post("/sdapi/v1/img2img", body), 422, "image_link")
    for blocked in ("http://localhost/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://10.0.0.1/x.png"):
        body = {"init_images": [blocked]}
        _assert_refused(api("alice").post("/sdapi/v1/img2img", body), 422, "init_images[0]")
    assert seen == []  # the platform never contacted the private address


def test_image_link_must_be_a_url_string(api) -> None:
    _assert_refused(api("alice").post("/sdapi/v1/img2img", {"alwayson_scripts": {"image_link": 5}}), 422, "image_link")
    body = {"alwayson_scripts": {"image_link": "file:///etc/passwd"}}
    _assert_refused(api("alice").post("/sdapi/v1/img2img", body), 422, "only http and https")


def test_the_vae_option_is_per_member_and_must_be_one_they_may_use(api, settings) -> None:
    from runtime.tiny.model import write_tiny_vae

    vae = write_tiny_vae(settings.DATA_DIR / "users" / "alice" / "models" / "VAE" / "alices-vae.safetensors")
    try:
        assert [v["model_name"] for v in api("alice").get("/sdapi/v1/sd-vae").json()] == ["alices-vae"]
        assert api("bob").get("/sdapi/v1/sd-vae").json() == []
        assert api("alice").post("/sdapi/v1/options", {"sd_vae": "alices-vae"}).status_code == 200
        assert api("alice").get("/sdapi/v1/options").json()["sd_vae"] == "alices-vae.safetensors"
        assert api("bob").get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"
        response = api("bob").post("/sdapi/v1/options", {"sd_vae": "alices-vae.safetensors"})
        assert response.status_code == 404 and "unknown VAE" in response.json()["detail"]
        assert api("alice").post("/sdapi/v1/options", {"sd_vae": "None"}).status_code == 200
        assert api("alice").get("/sdapi/v1/options").json()["sd_vae"] == "None"
    finally:
        vae.unlink()


def test_model_upscalers_are_listed_per_member_and_missing_ones_degrade_or_are_refused(api, personas, settings) -> None:
    from runtime.upscalers import write_tiny_esrgan

    path = write_tiny_esrgan(settings.DATA_DIR / "users" / "alice" / "models" / "ESRGAN" / "RealESRGAN_x4plus.pth")
    try:
        names = [u["name"] for u in api("alice").get("/sdapi/v1/upscalers").json()]
        assert names[:3] == ["None", "Lanczos", "Nearest"] and "R-ESRGAN 4x+" in names  # A1111's name for the file
        assert "R-ESRGAN 4x+" not in [u["name"] for u in api("charlie").get("/sdapi/v1/upscalers").json()]
        assert [m["name"] for m in api("alice").get("/sdapi/v1/realesrgan-models").json()] == ["R-ESRGAN 4x+"]
        assert api("charlie").get("/sdapi/v1/realesrgan-models").json() == []
        body = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}
        unknown = api("charlie").post("/sdapi/v1/txt2img", {**body, "hr_upscaler": "4x-NotA1111s"})
        assert unknown.status_code == 404 and "not installed" in unknown.json()["detail"]  # A1111 refuses too
        settings.ATELIER_STRICT_MISSING_MODELS = True  # the operator's choice: A1111's own names refused too
        refused = api("charlie").post("/sdapi/v1/txt2img", body)
        assert refused.status_code == 404 and "not installed" in refused.json()["detail"]
        assert not Job.objects.exists()
        settings.ATELIER_STRICT_MISSING_MODELS = False  # the default: a Lanczos upscale and a note saying why
        degraded = Job.objects.get(public_id=api("charlie").post("/api/v1/jobs", body).json()["id"])
        request = GenerationRequest.from_json(degraded.params)
        assert request.hr_upscaler == "Lanczos" and JobSpec.from_json(degraded.params).upscaler is None
        assert "R-ESRGAN 4x+" in request.missing_models[0] and "models/ESRGAN" in request.missing_models[0]
        response = api("alice").post("/api/v1/jobs", body)
        assert response.status_code == 201, response.content
        job = Job.objects.get(public_id=response.json()["id"])
        upscaler = JobSpec.from_json(job.params).upscaler
        assert upscaler.model.sha256 and upscaler.model.key == "users/alice/models/ESRGAN/RealESRGAN_x4plus.pth"
        shown = api("alice").get(f"/api/v1/jobs/{job.public_id}").json()
        assert shown["params"]["hr_upscaler"] == "R-ESRGAN 4x+" and "upscaler_model" not in shown["params"]
    finally:
        path.unlink()


def test_progress_carries_the_running_jobs_live_preview_and_only_to_its_owner(api, personas) -> None:
    from a1111.generation import parse_generation_request
    from inference.services import job_submit
    from inference.transitions import job_claim, job_progress, job_succeed

    from django.utils import timezone

    from inference.models import Worker

    job = job_submit(user=personas["alice"], request=parse_generation_request({"prompt": "x", "steps": 10}))
    worker, _ = Worker.objects.get_or_create(name="w@test", defaults={"queue": "q.test", "last_heartbeat": timezone.now()})
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1)
    job = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=10)
    assert job_progress(job=job, attempt=1, step=5, preview="cHJldmlldw==")
    mine = api("alice").get("/sdapi/v1/progress").json()
    assert mine["current_image"] == "cHJldmlldw==" and mine["state"]["sampling_step"] == 5
    assert api("alice").get(f"/api/v1/jobs/{job.public_id}").json()["preview"] == "data:image/jpeg;base64,cHJldmlldw=="
    assert api("charlie").get("/sdapi/v1/progress").json()["current_image"] is None
    assert job_succeed(job=job, attempt=1, outputs=[], infotexts=[], gpu_seconds=0.1)
    assert api("alice").get(f"/api/v1/jobs/{job.public_id}").json()["preview"] is None  # over with the job
