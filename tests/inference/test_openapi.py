"""`/openapi.json` and `/docs`: the document is valid, complete, and agrees with the parsers.

Three kinds of drift fail here rather than in a client:
- a route served under an API prefix without an operation in `inference/openapi/operations.py`
  (or an operation for a route that is gone, or different methods);
- a request field the parser reads that the request model does not declare;
- a bound the document states (with the default limits and with other limits) that the parser
  does not enforce at exactly that value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_spec_validator import validate

from a1111.errors import RequestValidationError
from a1111.extras import parse_extras_request
from a1111.promptgen import parse_promptgen_request
from a1111.generation import Limits, parse_generation_request
from inference.openapi.document import build_document
from inference.openapi.operations import OPERATIONS

API_PREFIXES = ("/api/v1/", "/sdapi/v1/", "/controlnet/", "/api/predict/", "/internal/progress")  # not /internal/events: workers only
SMALL = Limits(max_steps=4, min_size=64, max_size=512, max_batch_size=2, max_n_iter=3, max_prompt_chars=300)


def _served(resolver: URLResolver | None = None, prefix: str = "/") -> Iterator[tuple[str, Callable]]:
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _served(entry, route)
        elif isinstance(entry, URLPattern):
            yield route, entry.callback


def _template(django_route: str) -> str:
    """`/api/v1/jobs/<str:public_id>` → `/api/v1/jobs/{public_id}`."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", django_route)


def test_the_document_is_valid_openapi_3_1_for_any_limits() -> None:
    for limits in (Limits(), SMALL):
        document = build_document(limits)
        validate(document)
        assert document["openapi"].startswith("3.1")
        json.dumps(document)  # serialisable as served


def test_every_api_route_and_method_is_in_the_document_and_nothing_else() -> None:
    documented = {(op.path, op.method) for op in OPERATIONS}
    served: set[tuple[str, str]] = set()
    for route, view in _served():
        if not route.startswith(API_PREFIXES):
            continue
        path = _template(route)
        if path.startswith("/api/predict/"):
            continue  # the EAS queue: one catch-all route, documented per form (see the EAS test below)
        methods = getattr(view, "allowed_methods", None)
        assert methods, f"{route}: its view does not declare allowed_methods (use api_view / sdapi)"
        served |= {(path, method) for method in methods}
    missing = sorted(served - documented)
    assert not missing, f"served but not in inference/openapi/operations.py: {missing}"
    stale = sorted(documented - served - {(op.path, op.method) for op in OPERATIONS if op.path.startswith("/api/predict/")})
    assert not stale, f"documented but not served: {stale}"


def test_the_eas_catch_all_route_is_documented_for_each_queue_and_method() -> None:
    from inference.eas.views import predict

    documented = {(op.path, op.method) for op in OPERATIONS}
    for path in ("/api/predict/{service}", "/api/predict/{service}/sink"):
        assert {(path, method) for method in predict.allowed_methods} <= documented
    for route in ("txt2img", "img2img"):
        assert (f"/api/predict/{{service}}/sdapi/v1/{route}", "POST") in documented


def test_each_operation_has_an_id_a_tag_and_an_error_model() -> None:
    document = build_document(Limits())
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["tags"] and op["summary"], f"{method} {path}"
            assert "401" in op["responses"] or path.startswith("/api/predict/"), f"{method} {path}: no 401"
            for status, answer in op["responses"].items():
                if status.startswith("4"):
                    assert answer["content"], f"{method} {path} {status}: no error body"


# --- the request models agree with the parsers ------------------------------------------------


class Recording(dict):
    """A request body that records every key the parser asks for."""

    def __init__(self, *args: Any, seen: set[str], prefix: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen, self.prefix = seen, prefix
        for key, value in list(self.items()):
            if isinstance(value, dict):
                super().__setitem__(key, Recording(value, seen=seen, prefix=f"{prefix}{key}."))

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(self.prefix + key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(self.prefix + key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(f"{self.prefix}{key}")
        return super().__contains__(key)


def _properties(document: dict, model: str) -> dict[str, dict]:
    return document["components"]["schemas"][model]["properties"]


def _branch(schema: dict) -> dict:
    """The non-null branch of `T | None`."""
    return next((b for b in schema.get("anyOf", ()) if b.get("type") != "null"), schema)


PARSERS: dict[str, tuple[Callable[[Mapping[str, Any], Limits], Any], dict[str, Any]]] = {
    "StableDiffusionTxt2ImgProcessingAPI": (
        lambda body, limits: parse_generation_request(body, limits=limits),
        {"kind": "txt2img", "enable_hr": True, "restore_faces": True, "width": 64, "height": 64, "hr_scale": 1.0},
    ),
    "StableDiffusionImg2ImgProcessingAPI": (
        lambda body, limits: parse_generation_request(body, limits=limits), {"kind": "img2img"},
    ),
    "ExtrasSingleImageRequest": (lambda body, limits: parse_extras_request(body), {}),
    "PromptgenRequest": (lambda body, limits: parse_promptgen_request(body), {"prompt": "a cat", "model": "m"}),
    "OverrideSettings": (
        lambda body, limits: parse_generation_request(
            {"restore_faces": True, "override_settings": body}, limits=limits), {},
    ),
}


@pytest.mark.parametrize("model", ["StableDiffusionTxt2ImgProcessingAPI", "StableDiffusionImg2ImgProcessingAPI",
                                   "ExtrasSingleImageRequest", "PromptgenRequest"])
def test_every_field_the_parser_reads_is_declared(model: str) -> None:
    parse, context = PARSERS[model]
    seen: set[str] = set()
    parse(Recording({**context, "override_settings": {"code_former_weight": 0.5}}, seen=seen), Limits())
    document = build_document(Limits())
    declared = set(_properties(document, model)) | {"kind"}  # `kind`: the native API's, declared there
    for prefix, nested in (("override_settings.", "OverrideSettings"), ("alwayson_scripts.", "AlwaysonScripts")):
        declared |= {prefix + key for key in _properties(document, nested)}
    undeclared = sorted(seen - declared)
    assert not undeclared, f"{model}: the parser reads {undeclared}, which the model does not declare"


def test_every_field_interrogate_reads_is_declared() -> None:
    import base64
    import io

    from PIL import Image

    from a1111.interrogate import parse_interrogate_model
    from inference.inputs.images import read_extras_images

    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    seen: set[str] = set()
    body = Recording({"image": base64.b64encode(png.getvalue()).decode(), "model": "deepdanbooru"}, seen=seen)
    assert parse_interrogate_model(body) == "deepdanbooru"
    read_extras_images(body, batch=False, fetcher_factory=None)
    declared = set(_properties(build_document(Limits()), "InterrogateRequest"))
    assert seen and not seen - declared, f"the interrogate route reads {sorted(seen - declared)}, which it does not declare"


def _bounds(document: dict, model: str) -> Iterator[tuple[str, str, float, float, float]]:
    for name, schema in _properties(document, model).items():
        branch = _branch(schema)
        if branch.get("type") in ("integer", "number") and "minimum" in branch and "maximum" in branch:
            step = 1 if branch["type"] == "integer" else 0.001
            yield name, branch["type"], branch["minimum"], branch["maximum"], step


def _refused_field(parse: Callable, body: dict, limits: Limits) -> str | None:
    try:
        parse(body, limits)
    except RequestValidationError as exc:
        return exc.field
    return None


@pytest.mark.parametrize("limits", [Limits(), SMALL], ids=["default-limits", "small-limits"])
@pytest.mark.parametrize("model", sorted(PARSERS))
def test_every_stated_bound_is_the_parsers_bound(model: str, limits: Limits) -> None:
    """At each stated minimum and maximum the parser accepts; one step beyond, it refuses naming the field."""
    parse, context = PARSERS[model]
    document = build_document(limits)
    checked = 0
    for name, kind, lo, hi, step in _bounds(document, model):
        where = f"override_settings.{name}" if model == "OverrideSettings" else name
        for value in (lo, hi):
            assert _refused_field(parse, {**context, name: value}, limits) is None, f"{model}.{name}={value} refused"
        for value in (lo - step, hi + step):
            refused = _refused_field(parse, {**context, name: value}, limits)
            assert refused == where, f"{model}.{name}={value}: accepted or blamed on {refused!r}"
        checked += 1
    assert checked, f"{model}: no bounded field checked"


def test_prompt_length_is_the_limit_stated() -> None:
    document = build_document(SMALL)
    assert _branch(_properties(document, "StableDiffusionTxt2ImgProcessingAPI")["prompt"])["maxLength"] == 300
    parse_generation_request({"prompt": "a" * 300}, limits=SMALL)
    with pytest.raises(RequestValidationError) as refused:
        parse_generation_request({"prompt": "a" * 301}, limits=SMALL)
    assert refused.value.field == "prompt"


def test_a_default_over_the_limits_is_shown_and_applied_clamped() -> None:
    """Under a 4-step, 256 px limit a request without steps or size is valid, as the document says."""
    limits = Limits(max_steps=4, max_size=256)
    props = _properties(build_document(limits), "StableDiffusionTxt2ImgProcessingAPI")
    assert (props["steps"]["default"], props["width"]["default"]) == (4, 256)
    request = parse_generation_request({}, limits=limits)
    assert (request.steps, request.width, request.height) == (4, 256, 256)


# --- served ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_schema_is_public_and_names_no_ones_data(client, personas, tokens, settings) -> None:
    settings.ATELIER_MAX_STEPS = 33
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    document = response.json()
    validate(document)
    steps = _branch(_properties(document, "StableDiffusionTxt2ImgProcessingAPI")["steps"])
    assert steps["maximum"] == 33  # this deployment's limit, not a hard-coded one
    text = response.content.decode()
    for secret in (*tokens.values(), "alice", "studio-a", str(settings.DATA_DIR)):
        assert secret not in text
    assert client.post("/openapi.json").status_code == 405


@pytest.mark.django_db
def test_the_docs_page_is_for_signed_in_members_and_loads_only_local_files(client, personas) -> None:
    anonymous = client.get("/docs")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    client.force_login(personas["alice"])
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-schema-url="/openapi.json"' in html
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert scripts and all(src.startswith("/static/") for src in scripts), scripts
    assert "<script>" not in html  # the CSP allows no inline script
    assert 'href="/tokens/"' in html
    home = client.get("/")
    assert 'id="api-docs-link" href="/docs"' in home.content.decode()


# --- what the fuzz runs found, kept fixed -----------------------------------------------------


@pytest.mark.django_db
def test_unknown_paths_under_the_apis_are_json_404s_in_each_apis_shape(client, personas, tokens) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {tokens['alice']}"}
    native = client.get("/api/v1/jobs/x/images/-1", **auth)
    assert native.status_code == 404 and "no such API route" in native.json()["error"]
    sdapi = client.get("/sdapi/v1/no-such-route", **auth)
    assert sdapi.status_code == 404 and set(sdapi.json()) == {"error", "detail", "body", "errors"}
    assert client.get("/no-such-page/").status_code == 404  # HTML elsewhere, as before
    assert "html" in client.get("/no-such-page/")["Content-Type"]


@pytest.mark.django_db
def test_options_keep_their_types(api) -> None:
    for body, field in (({"sd_vae": {}}, "sd_vae"), ({"sd_model_checkpoint": 3}, "sd_model_checkpoint"),
                        ({"CLIP_stop_at_last_layers": 13}, "CLIP_stop_at_last_layers"),
                        ({"samples_format": ["png"]}, "samples_format")):
        response = api("alice").post("/sdapi/v1/options", body)
        assert response.status_code == 422 and response.json()["body"] == field, response.content
    assert api("alice").post("/sdapi/v1/options", {"CLIP_stop_at_last_layers": 2}).status_code == 200
    assert api("alice").get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2


@pytest.mark.django_db
def test_progress_checks_its_query_and_hires_fields_are_checked_with_hires_off(api) -> None:
    refused = api("alice").get("/sdapi/v1/progress?skip_current_image=null")
    assert refused.status_code == 422 and refused.json()["body"] == "skip_current_image"
    assert api("alice").get("/sdapi/v1/progress?skip_current_image=true").status_code == 200
    with pytest.raises(RequestValidationError) as hires:
        parse_generation_request({"enable_hr": False, "hr_resize_y": 10**6})
    assert hires.value.field == "hr_resize_y"
