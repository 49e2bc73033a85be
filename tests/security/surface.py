"""The platform's attack surface: every route it serves, what guards it, and the tests that prove it.

`enumerate_routes()` walks what the ASGI application really serves:

* every HTTP URL pattern of `config.urls`, included URLconfs and Django admin among them;
* every websocket route of the Channels router inside `config.asgi.application`;
* the mounts `config.asgi.AtelierApplication` handles before Django sees a request: the workspace
  proxy at `/ui` and `/ui/…`, and static files when `SERVE_STATIC` is on.

`ROUTES` says, for each of them, who may call it (`Access`) and which tests prove that. The
surface tests (`tests/security/test_surface_*.py`) fail when a served route is missing from
`ROUTES`, when `ROUTES` names a route that is gone, or when a named test does not exist, and
they sweep every entry with anonymous callers and outsiders (see `README.md` here).

Django admin is one *family*: every route inside the admin site's own URLconf (`admin.site.urls`,
which grows with each `ModelAdmin`) is covered by `ADMIN_FAMILY`, and swept route by route.

`ATTACKS` maps each known attack class (`/work/shared/reference/aesthetics_security.md`, the
advisories of SD web UIs) to the tests that cover it, or to `None` with the reason it is out of
scope. Deleting a named test fails the security suite.
"""

from __future__ import annotations

import ast
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_FILE = "tests/security/surface.py"


class Access(enum.Enum):
    """Who may call a route."""

    PUBLIC = "public"  # anyone: the sign-in page, static files
    AUTHENTICATED = "authenticated"  # a session cookie or an API token; data is the caller's own
    OWNER_SCOPED = "owner_scoped"  # names a user-owned object by id: 404 to anyone not allowed to see it
    OPERATOR = "operator"  # platform operators (is_staff) only
    INTERNAL = "internal"  # worker-to-web: refused without the internal credential


@dataclass(frozen=True)
class Route:
    """One served route. `key` is how `ROUTES` names it: `<protocol> /<pattern>`."""

    protocol: str  # "http", "websocket", or "asgi" (a mount handled before Django and Channels)
    pattern: str  # the URL pattern as Django writes it, with a leading slash
    view: str  # dotted path of the callback, for messages
    family: str | None = None  # "admin" for routes of the admin site's own URLconf

    @property
    def key(self) -> str:
        return f"{self.protocol} {self.pattern}"


@dataclass(frozen=True)
class Entry:
    """What the registry promises for one route.

    `methods` are the HTTP methods the view serves (owner-scoped routes are swept with exactly
    these as outsiders: each must be a 404). `tests` are "tests/path.py::test_name" ids, without
    parametrisation brackets. `extra["served_when_setting"]` names a setting that turns the
    route off (its entry is then not stale).
    """

    access: Access
    tests: tuple[str, ...]
    methods: tuple[str, ...] = ("GET",)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --- enumeration ----------------------------------------------------------------------------------

def _walk_urlconf(patterns: list, prefix: str = "", family: str | None = None) -> Iterator[Route]:
    from django.urls import URLPattern, URLResolver

    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner_family = family or ("admin" if pattern.app_name == "admin" else None)
            yield from _walk_urlconf(pattern.url_patterns, prefix + str(pattern.pattern), inner_family)
        elif isinstance(pattern, URLPattern):
            yield Route("http", "/" + prefix + str(pattern.pattern), pattern.lookup_str, family)
        else:  # pragma: no cover - Django has no third kind today
            raise TypeError(f"unknown URL pattern type {type(pattern)!r} under {prefix!r}")


def _find_url_router(app: Any, depth: int = 0) -> Any:
    """The Channels `URLRouter` inside the websocket middleware stack (validators, auth, sessions)."""
    from channels.routing import URLRouter

    if isinstance(app, URLRouter):
        return app
    if depth > 10:
        raise LookupError("no URLRouter inside the websocket application")
    for attribute in ("application", "inner", "app"):
        inner = getattr(app, attribute, None)
        if inner is not None:
            return _find_url_router(inner, depth + 1)
    raise LookupError(f"no URLRouter inside {type(app).__name__}")


def _walk_channels(routes: list, prefix: str = "") -> Iterator[Route]:
    from channels.routing import URLRouter

    for route in routes:
        pattern = prefix + str(route.pattern)
        callback = route.callback
        if isinstance(callback, URLRouter):
            yield from _walk_channels(callback.routes, pattern)
            continue
        consumer = getattr(callback, "consumer_class", callback)
        yield Route("websocket", "/" + pattern.lstrip("/"), f"{consumer.__module__}.{consumer.__qualname__}")


def enumerate_routes() -> list[Route]:
    """Every route the ASGI application serves, HTTP, websocket and pre-Django mounts."""
    from django.conf import settings
    from django.urls import get_resolver

    from config import asgi

    routes = list(_walk_urlconf(get_resolver().url_patterns))
    websocket_app = asgi.application.platform.application_mapping["websocket"]
    routes += list(_walk_channels(_find_url_router(websocket_app).routes))

    from frontend.proxy import MOUNT

    proxy = f"{type(asgi.application.workspace_proxy).__module__}.{type(asgi.application.workspace_proxy).__name__}"
    routes.append(Route("asgi", MOUNT, proxy))  # `path == MOUNT or path.startswith(MOUNT + "/")`
    routes.append(Route("asgi", MOUNT + "/<path>", proxy))
    from inference.api.internal import EVENTS_PATH

    routes.append(Route("asgi", EVENTS_PATH, "inference.api.internal.events_app"))
    if settings.SERVE_STATIC:
        static = "/" + settings.STATIC_URL.strip("/") + "/<path>"
        routes.append(Route("asgi", static, "django.contrib.staticfiles.handlers.ASGIStaticFilesHandler"))
    return routes


# --- concrete paths for a pattern ---------------------------------------------------------------

_CONVERTER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^()]*)\)")


def concrete_path(pattern: str, values: dict[str, str]) -> str:
    """A real URL for `pattern`, its parameters filled from `values` (regex groups included).

    A regex group with alternatives (`auth|tenants|…`) takes its first one when `values` has
    no entry; callers check with `django.urls.resolve` that the result is the same route.
    """

    def group(match: re.Match[str]) -> str:
        name = match["name"]
        if name in values:
            return values[name]
        return match["body"].split("|")[0] if "|" in match["body"] else "x"

    path = _REGEX_GROUP.sub(group, pattern)
    path = path.replace("^", "").replace("$", "")
    return _CONVERTER.sub(lambda m: values.get(m["name"], "x"), path)


# --- the registry -------------------------------------------------------------------------------

S = "tests/security/"
HTTP_SWEEP = (
    f"{S}test_surface_http.py::test_anonymous_callers_never_get_a_2xx",
)
OWNER_SWEEP = (
    *HTTP_SWEEP,
    f"{S}test_surface_http.py::test_outsiders_get_404_for_alices_objects",
    f"{S}test_surface_http.py::test_the_owner_reaches_her_own_objects",
)
OPERATOR_SWEEP = (*HTTP_SWEEP, f"{S}test_surface_http.py::test_members_never_get_a_2xx_from_operator_routes")
SDAPI_GET = "tests/a1111/test_sdapi_routes.py::test_every_get_route_needs_a_token_and_answers_json"
SDAPI_POST = "tests/a1111/test_sdapi_routes.py::test_every_post_route_needs_a_token"
JOBS_404 = "tests/inference/test_api.py::test_alices_job_is_404_to_other_members_on_every_endpoint"
E2E_404 = "tests/e2e/test_platform.py::test_other_users_get_404_for_every_job_endpoint"
GROUPS_404 = "tests/inference/test_job_groups.py::test_alices_plot_is_404_to_other_members_on_every_endpoint"

USAGE_SCOPE = (
    "tests/security/test_usage_api.py::test_bob_and_charlie_get_404_for_alices_usage_and_studio_as_statement",
    "tests/security/test_usage_api.py::test_a_tenant_admin_sees_her_tenant_and_its_members_and_nothing_else",
    "tests/security/test_usage_api.py::test_operators_see_any_tenant_and_must_name_the_statements",
)
UPLOADS_SCOPE = (  # /api/v1/uploads: tests/security/test_uploads_scope.py
    f"{S}test_uploads_scope.py::test_bob_and_charlie_get_404_for_alices_upload_on_every_method",
    f"{S}test_uploads_scope.py::test_anonymous_callers_and_wrong_tokens_are_401",
    f"{S}test_uploads_scope.py::test_a_session_may_upload_with_the_csrf_token_and_not_without",
    f"{S}test_uploads_scope.py::test_bad_paths_are_refused_before_anything_is_stored",
    f"{S}test_uploads_scope.py::test_members_write_only_where_they_may",
    f"{S}test_uploads_scope.py::test_a_link_out_of_the_home_is_refused_at_start_and_when_swapped_in_later",
)
TEAM_SCOPE = (  # every /team/ route: studio-a's admin only (tests/security/test_team_admin_scope.py)
    f"{S}test_team_admin_scope.py::test_members_other_teams_admins_and_operators_get_404_on_every_team_route",
    f"{S}test_team_admin_scope.py::test_dana_cannot_reach_studio_a_through_her_own_team_pages",
    f"{S}test_team_admin_scope.py::test_every_post_needs_the_csrf_token_with_a_session",
    f"{S}test_team_admin_scope.py::test_anonymous_callers_are_sent_to_sign_in",
)

FILES_SCOPE = (  # every FileBrowser route (tests/security/test_files_scope.py)
    f"{S}test_files_scope.py::test_outsiders_get_the_404_of_a_missing_file_for_alices_by_token_and_session",
    f"{S}test_files_scope.py::test_the_team_area_is_always_the_callers_own_team",
    f"{S}test_files_scope.py::test_a_member_writing_into_public_or_a_member_into_the_team_is_403_and_nothing_is_written",
    f"{S}test_files_scope.py::test_anonymous_callers_are_refused_on_every_method_and_the_page_sends_them_to_sign_in",
    f"{S}test_files_scope.py::test_session_writes_need_the_csrf_token",
    f"{S}test_files_scope.py::test_no_answer_names_a_server_path",
)
FILES_NOTE = ("an area (home: the caller's own folder; team: their own team's, written by its admins; public: "
              "written by operators) and a path inside it, resolved by tenants.filespace.resolve_place: no URL "
              "names another member's or team's file; a session writes with the CSRF token only")

_A = Access
ROUTES: dict[str, Entry] = {
    # --- the native jobs API (token; a session cookie may read) ---
    "http /api/v1/jobs": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP,
        "tests/inference/test_api.py::test_no_token_or_a_wrong_or_revoked_token_is_401",
        "tests/inference/test_api.py::test_a_session_cookie_may_read_but_not_write",
        JOBS_404,  # the list holds only the caller's own jobs
    ), methods=("GET", "POST")),
    "http /api/v1/jobs/<str:public_id>": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, JOBS_404, E2E_404,
        "tests/inference/test_api.py::test_tenant_admins_and_operators_may_see_their_members_jobs",
    )),
    "http /api/v1/jobs/<str:public_id>/cancel": Entry(_A.OWNER_SCOPED, (*OWNER_SWEEP, JOBS_404, E2E_404),
                                                      methods=("POST",)),
    "http /api/v1/jobs/<str:public_id>/images/<int:index>": Entry(_A.OWNER_SCOPED, (*OWNER_SWEEP, JOBS_404, E2E_404)),
    "http /api/v1/jobs/<str:public_id>/control-maps/<int:index>": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP,
        "tests/a1111/test_controlnet_api.py::test_pai_image_link_form_returns_an_image_mask_url_only_the_owner_can_fetch",
    )),
    "http /api/v1/job-groups": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, GROUPS_404,
    ), methods=("POST",), note="an X/Y/Z plot: each cell submitted as the caller's own job"),
    "http /api/v1/job-groups/<str:group_id>": Entry(_A.OWNER_SCOPED, (*OWNER_SWEEP, GROUPS_404)),
    "http /api/v1/job-groups/<str:group_id>/cancel": Entry(_A.OWNER_SCOPED, (*OWNER_SWEEP, GROUPS_404),
                                                           methods=("POST",)),
    "http /api/v1/job-groups/<str:group_id>/grid": Entry(_A.OWNER_SCOPED, (*OWNER_SWEEP, GROUPS_404)),
    "http /api/v1/models": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/inference/test_api.py::test_models_lists_what_the_caller_may_use")),
    "http /api/v1/promptgen": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP,
        "tests/inference/test_promptgen_api.py::test_anonymous_callers_are_401",
        "tests/inference/test_promptgen_api.py::test_another_tenants_model_is_a_404_and_never_listed",
        "tests/inference/test_promptgen_api.py::test_outsiders_get_404_on_alices_promptgen_job",
    ), methods=("POST",), note="submits as the caller; models resolved among the caller's own, team and public ones"),
    "http /api/v1/promptgen/models": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP,
        "tests/inference/test_promptgen_api.py::test_anonymous_callers_are_401",
        "tests/inference/test_promptgen_api.py::test_another_tenants_model_is_a_404_and_never_listed",
    )),
    "http /api/v1/usage": Entry(_A.AUTHENTICATED, HTTP_SWEEP, note="the caller's own usage records only"),
    "http /api/v1/usage/records": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, *USAGE_SCOPE), note=(
        "members: their own records; tenant admins: their tenant's; operators: any; anyone else's is a 404")),
    "http /api/v1/usage/statement": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, *USAGE_SCOPE), note=(
        "tenant admins: their tenant's; operators: any; members and other tenants get 404")),
    # --- resumable uploads into the file areas (token, or a session with the CSRF token on writes) ---
    "http /api/v1/uploads": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *UPLOADS_SCOPE,
        "tests/tenants/test_uploads.py::test_a_member_over_her_storage_limit_is_refused_before_anything_is_stored",
    ), methods=("POST",), note="starts an upload as the caller, to where tenants.filespace lets them write"),
    "http /api/v1/uploads/<str:upload_id>": Entry(_A.OWNER_SCOPED, (*OWNER_SWEEP, *UPLOADS_SCOPE), note=(
        "also PUT (a chunk) and DELETE (cancel): the sweep sends GET and POST, "
        "tests/security/test_uploads_scope.py sends every method as bob and charlie (404) and anonymously (401)")),
    # --- the FileBrowser (frontend/files_api.py): paths name the caller's own areas only ---
    "http /api/v1/files/<str:area>/": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, *FILES_SCOPE),
                                            methods=("GET", "POST", "DELETE"), note=FILES_NOTE),
    "http /api/v1/files/<str:area>/<path:relative>": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *FILES_SCOPE,
        "tests/frontend/test_files_api.py::test_bob_and_charlie_get_404_for_alices_files",
        "tests/frontend/test_files_api.py::test_bad_paths_are_refused_with_a_message",
        "tests/frontend/test_files_api.py::test_symbolic_links_out_are_never_followed",
        "tests/frontend/test_files_api.py::test_bob_reads_the_team_folder_and_alice_its_admin_writes_it",
        "tests/frontend/test_files_api.py::test_public_folders_are_read_only_to_members_and_writable_by_operators",
    ), methods=("GET", "POST", "DELETE"), note=FILES_NOTE),
    "http /api/v1/workers": Entry(_A.OPERATOR, (
        *OPERATOR_SWEEP, "tests/inference/test_api.py::test_operators_without_a_tenant_cannot_submit_but_may_list_workers")),
    # --- the EAS async queue (PAI-EAS API Edition; a token of the named service, raw or Bearer) ---
    "http /api/predict/<path:target>": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP,
        f"{S}test_eas_http.py::test_wrong_tokens_and_unknown_services_are_401_and_reach_nothing",
        f"{S}test_eas_http.py::test_charlie_cannot_read_alices_sink_with_his_own_services_token",
        f"{S}test_eas_http.py::test_a_missing_index_is_an_empty_answer_not_an_error",
        f"{S}test_eas_http.py::test_bad_parameters_are_a_400_naming_them",
        f"{S}test_eas_http.py::test_oversized_payloads_are_413_with_a_message",
        "tests/inference/test_eas_queues.py::test_authenticate_accepts_raw_and_bearer_tokens_of_its_own_service_only",
    ), methods=("GET", "POST", "PUT", "DELETE"),
        note="a service's token reaches only that service's queues; members' own API tokens reach none; "
             "a wrong token and an unknown service answer the same 401"),
    # --- /sdapi/v1 (A1111-compatible; token or Basic username:token) ---
    "http /sdapi/v1/txt2img": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_POST, f"{S}test_prompt_styles.py::test_alices_style_is_unusable_for_bob_and_charlie"),
        methods=("POST",)),
    "http /sdapi/v1/img2img": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/a1111/test_sdapi_routes.py::test_img2img_without_an_init_image_is_a1111s_404"),
        methods=("POST",)),
    "http /sdapi/v1/extra-single-image": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/a1111/test_extras_api.py::test_a_job_is_stored_with_its_inputs_in_the_owners_folder"),
        methods=("POST",)),
    "http /sdapi/v1/extra-batch-images": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/a1111/test_extras_api.py::test_batch_refusals_name_the_image"), methods=("POST",)),
    "http /sdapi/v1/interrogate": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_POST, f"{S}test_interrogate.py::test_an_interrogate_job_and_its_caption_are_the_callers_only"),
        methods=("POST",)),
    "http /sdapi/v1/png-info": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/a1111/test_sdapi_routes.py::test_png_info_reads_an_a1111_png_and_refuses_bad_images"),
        methods=("POST",)),
    "http /sdapi/v1/progress": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_GET, "tests/a1111/test_sdapi_routes.py::test_progress_and_interrupt_touch_only_the_callers_jobs",
        "tests/a1111/test_sdapi_routes.py::test_progress_carries_the_running_jobs_live_preview_and_only_to_its_owner")),
    "http /internal/progress": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/a1111/test_sampler_parameters_api.py::test_internal_progress_follows_the_callers_own_task_only"),
        methods=("POST",)),
    "http /sdapi/v1/interrupt": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_POST, "tests/a1111/test_sdapi_routes.py::test_progress_and_interrupt_touch_only_the_callers_jobs"),
        methods=("POST",)),
    "http /sdapi/v1/skip": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_POST, f"{S}test_skip_and_seed.py::test_the_api_skip_reaches_the_caller_s_own_running_job_only"),
        methods=("POST",)),
    "http /sdapi/v1/options": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_GET, SDAPI_POST, "tests/a1111/test_sdapi_routes.py::test_options_are_per_member"),
        methods=("GET", "POST")),
    "http /sdapi/v1/cmd-flags": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET),
                                      note="fixed, harmless flags only (A1111 #17411)"),
    "http /sdapi/v1/samplers": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/schedulers": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/upscalers": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_GET,
        "tests/a1111/test_sdapi_routes.py::test_model_upscalers_are_listed_per_member_and_missing_ones_degrade_or_are_refused")),
    "http /sdapi/v1/latent-upscale-modes": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/sd-models": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_GET, "tests/a1111/test_sdapi_routes.py::test_models_are_scoped_to_the_member")),
    "http /sdapi/v1/sd-vae": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_GET, "tests/a1111/test_sdapi_routes.py::test_the_vae_option_is_per_member_and_must_be_one_they_may_use")),
    "http /sdapi/v1/loras": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/hypernetworks": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/embeddings": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/face-restorers": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/realesrgan-models": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/prompt-styles": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_GET, f"{S}test_prompt_styles.py::test_alices_style_is_invisible_to_bob_and_charlie",
        f"{S}test_prompt_styles.py::test_a_team_style_of_studio_a_is_invisible_and_unusable_for_charlie",
        f"{S}test_prompt_styles.py::test_anonymous_callers_get_no_styles")),
    "http /sdapi/v1/script-info": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/extensions": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, SDAPI_GET,
        "tests/frontend/test_sdapi_extensions.py::test_extensions_are_listed_in_a1111s_shape_with_the_callers_own_switch",
        "tests/frontend/test_sdapi_extensions.py::test_anonymous_callers_are_refused",
    ), note="each installed extension with the caller's own on/off"),
    "http /sdapi/v1/scripts": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/memory": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_GET)),
    "http /sdapi/v1/refresh-checkpoints": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_POST), methods=("POST",)),
    "http /sdapi/v1/refresh-loras": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_POST), methods=("POST",)),
    "http /sdapi/v1/refresh-vae": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_POST), methods=("POST",)),
    "http /sdapi/v1/refresh-embeddings": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_POST), methods=("POST",)),
    "http /sdapi/v1/unload-checkpoint": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_POST), methods=("POST",)),
    "http /sdapi/v1/reload-checkpoint": Entry(_A.AUTHENTICATED, (*HTTP_SWEEP, SDAPI_POST), methods=("POST",)),
    # --- /controlnet (the sd-webui-controlnet extension's routes) ---
    "http /controlnet/model_list": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP,
        "tests/a1111/test_controlnet_api.py::test_model_and_module_lists_are_the_extensions_and_scoped_to_the_member")),
    "http /controlnet/module_list": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP,
        "tests/a1111/test_controlnet_api.py::test_model_and_module_lists_are_the_extensions_and_scoped_to_the_member")),
    "http /controlnet/version": Entry(_A.AUTHENTICATED, HTTP_SWEEP),
    # --- worker to web ---
    "asgi /internal/events": Entry(_A.INTERNAL, (
        f"{S}test_surface_asgi.py::test_the_event_ingress_refuses_requests_without_the_worker_signature",
    ), methods=("POST",), note="HMAC-SHA256 of the body with SECRET_KEY in X-Atelier-Signature; served before Django"),
    # --- probes and metrics (config/observability.py) ---
    "http /healthz": Entry(_A.PUBLIC, (
        f"{S}test_surface_http.py::test_public_routes_answer_anonymous_callers",
        f"{S}test_platform_probes.py::test_probes_are_public_and_name_nothing_of_anyones",
    ), note="liveness: 200 {\"status\": \"ok\"}, no I/O"),
    "http /readyz": Entry(_A.PUBLIC, (
        f"{S}test_surface_http.py::test_public_routes_answer_anonymous_callers",
        f"{S}test_platform_probes.py::test_probes_are_public_and_name_nothing_of_anyones",
        f"{S}test_platform_probes.py::test_a_failed_readiness_check_names_no_host_port_or_secret",
    ), note="readiness: database, broker, storage; a 503 names the failed one in a fixed vocabulary"),
    "http /metrics": Entry(_A.OPERATOR, (
        *OPERATOR_SWEEP,
        f"{S}test_platform_probes.py::test_metrics_refuse_anonymous_members_and_wrong_tokens",
        f"{S}test_platform_probes.py::test_an_empty_metrics_token_setting_refuses_every_bearer_token",
        f"{S}test_platform_probes.py::test_metrics_answer_the_metrics_token_and_operators_sessions",
    ), note="Prometheus text; Bearer ATELIER_METRICS_TOKEN (empty: no token works) or an operator's session"),
    # --- pages ---
    "http /": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/test_frontend.py::test_home_requires_sign_in_and_shows_the_members_team_and_models",
        "tests/frontend/test_home.py::test_home_links_the_workspace_and_shows_own_images_and_usage")),
    "http /team/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/frontend/test_home.py::test_team_page_is_the_tenant_admins_own_team", *TEAM_SCOPE,
        "tests/frontend/test_team_admin.py::test_an_admin_adds_a_member_with_an_initial_password",
        "tests/frontend/test_team_admin.py::test_bad_input_re_renders_the_add_form_naming_the_field"),
        methods=("GET", "POST"),
        note="tenant admins only (everyone else: 404); the admin's own team; POST adds a member to it"),
    "http /team/members/<str:member>/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_member_limits_are_held_within_the_plan",
        "tests/frontend/test_team_admin.py::test_an_admin_sets_roles_but_never_demotes_the_last_admin"),
        methods=("GET", "POST"), note="a member of the admin's own team; POST sets the fields it carries"),
    "http /team/members/<str:member>/remove/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, *TEAM_SCOPE,
        "tests/frontend/test_team_admin.py::test_removing_a_member_deactivates_them_revokes_tokens_and_keeps_their_jobs",
        "tests/frontend/test_team_admin.py::test_an_admin_cannot_remove_herself_or_the_last_admin"), methods=("POST",)),
    "http /team/members/<str:member>/invite/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_a_new_invitation_link_resets_a_members_password"),
        methods=("POST",), note="a new invitation link for a member of the admin's own team, shown once"),
    "http /team/tokens/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_an_admin_creates_a_members_token_shown_once_and_revokes_it"),
        methods=("POST",), note="a token for the member named in the form, of the admin's own team only (else 404)"),
    "http /team/tokens/<str:api_token_id>/revoke/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_an_admin_creates_a_members_token_shown_once_and_revokes_it"),
        methods=("POST",), note="any token of a member of the admin's own team"),
    "http /team/rules/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_model_rules_for_a_member_and_a_role"),
        methods=("GET", "POST"), note="the team's model access rules; POST adds one for a member of the team or a role"),
    "http /team/rules/<str:rule_id>/delete/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_model_rules_for_a_member_and_a_role"), methods=("POST",)),
    "http /team/jobs/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_the_team_jobs_and_audit_log_in_the_tenants_time_zone")),
    "http /team/audit/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *TEAM_SCOPE, "tests/frontend/test_team_admin.py::test_the_team_jobs_and_audit_log_in_the_tenants_time_zone")),
    "http /invite/<str:token>/": Entry(_A.PUBLIC, (
        f"{S}test_surface_http.py::test_public_routes_answer_anonymous_callers",
        f"{S}test_team_admin_scope.py::test_the_invitation_page_is_public_but_needs_csrf_and_a_live_link",
        "tests/frontend/test_team_admin.py::test_an_invitation_link_works_once_and_signs_the_member_in",
        "tests/frontend/test_team_admin.py::test_unknown_invitation_links_are_a_clear_404", "tests/frontend/test_team_admin.py::test_an_expired_invitation_is_a_404"),
        methods=("GET", "POST"), note="an invited member sets their password once (hashed token, 7 days); else a 404 page"),
    "http /usage/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, f"{S}test_usage_pages_scope.py::test_a_member_sees_only_their_own_usage",
        f"{S}test_usage_pages_scope.py::test_the_usage_pages_need_a_sign_in_and_operators_have_no_usage_of_their_own",
        "tests/frontend/test_usage_pages.py::test_a_bad_month_is_a_400_with_the_form_saying_what_to_write"),
        note="the caller's own usage only; no parameter names anyone else"),
    "http /team/usage/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, f"{S}test_usage_pages_scope.py::test_team_usage_is_the_tenant_admins_own_team_only",
        "tests/frontend/test_usage_pages.py::test_team_usage_is_per_day_and_per_member_and_sums_to_the_records"),
        note="tenant admins only: members get 404; shows the admin's own tenant"),
    "http /ops/": Entry(_A.OPERATOR, (
        *OPERATOR_SWEEP, f"{S}test_usage_pages_scope.py::test_only_operators_reach_the_operations_page")),
    "http /team/bill/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *USAGE_SCOPE,
        "tests/security/test_usage_api.py::test_the_bill_page_defaults_to_this_month_and_explains_a_bad_month",
        "tests/tenants/test_exports.py::test_the_commands_csv_is_the_apis_and_the_statement_matches_the_bill_page"),
        note="tenant admins only (operators name the tenant): members and other tenants get 404"),
    "http /files/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, *FILES_SCOPE,
        "tests/frontend/test_files_api.py::test_the_page_needs_a_sign_in_and_is_linked_from_home_and_the_header",
        "tests/frontend/test_files_api.py::test_the_page_shows_team_and_public_read_only_to_members_and_refusals_with_their_status"),
        note="the FileBrowser page: one folder of the caller's own areas, read through the same service as the API"),
    "http /services/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/frontend/test_eas_services_page.py::test_alice_creates_a_service_and_a_token_shown_once_that_works_until_revoked",
        "tests/frontend/test_eas_services_page.py::test_bob_does_not_see_alices_service_and_charlie_gets_404_on_every_url",
        "tests/frontend/test_eas_services_page.py::test_bad_input_re_renders_the_form_naming_the_field",
        "tests/frontend/test_eas_services_page.py::test_sign_in_csrf_and_api_tokens"),
        methods=("GET", "POST"),
        note="lists the caller's own services (a tenant admin: the tenant's); creates one for the caller "
             "(a tenant admin: for a member of the tenant)"),
    "http /services/<str:service_id>/tokens/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, "tests/frontend/test_eas_services_page.py::test_bob_does_not_see_alices_service_and_charlie_gets_404_on_every_url",
        "tests/frontend/test_eas_services_page.py::test_a_tenant_admin_manages_a_members_service", "tests/frontend/test_eas_services_page.py::test_sign_in_csrf_and_api_tokens"),
        methods=("POST",), note="the owner or the tenant's admin; the raw token is in this answer only"),
    "http /services/<str:service_id>/tokens/<int:token_id>/revoke/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, "tests/frontend/test_eas_services_page.py::test_bob_does_not_see_alices_service_and_charlie_gets_404_on_every_url",
        "tests/frontend/test_eas_services_page.py::test_alice_creates_a_service_and_a_token_shown_once_that_works_until_revoked"),
        methods=("POST",), note="a token of a service the caller may manage; any other token is 404"),
    "http /services/<str:service_id>/delete/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, "tests/frontend/test_eas_services_page.py::test_bob_does_not_see_alices_service_and_charlie_gets_404_on_every_url",
        "tests/frontend/test_eas_services_page.py::test_deleting_a_service_drops_its_items_and_cancels_its_jobs"),
        methods=("GET", "POST"), note="GET: the confirmation page; POST: delete"),
    "http /tokens/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/frontend/test_tokens_page.py::test_alice_creates_a_token_shown_once_that_works_until_revoked",
        "tests/frontend/test_tokens_page.py::test_bob_and_charlie_cannot_see_or_revoke_alices_token",
        "tests/frontend/test_tokens_page.py::test_bad_names_re_render_the_form_naming_the_field",
        "tests/frontend/test_tokens_page.py::test_sign_in_csrf_and_api_tokens"),
        methods=("GET", "POST"),
        note="lists the caller's own API tokens; creates one for the caller (the raw token is in that answer only)"),
    "http /tokens/<str:api_token_id>/revoke/": Entry(_A.OWNER_SCOPED, (
        *OWNER_SWEEP, "tests/frontend/test_tokens_page.py::test_bob_and_charlie_cannot_see_or_revoke_alices_token",
        "tests/frontend/test_tokens_page.py::test_alice_creates_a_token_shown_once_that_works_until_revoked",
        "tests/frontend/test_tokens_page.py::test_sign_in_csrf_and_api_tokens"),
        methods=("POST",), note="the caller's own token only; anyone else's (a tenant admin's members' too) is 404"),
    "http /language/": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/frontend/test_home.py::test_language_switch_from_the_home_page_reaches_the_workspace"),
        methods=("POST",)),
    "http /favicon.ico": Entry(_A.PUBLIC, (
        f"{S}test_surface_http.py::test_public_routes_answer_anonymous_callers",
        "tests/frontend/test_home.py::test_the_favicon_is_served_and_the_workspace_links_the_api_docs"),
        note="a redirect to the static icon"),
    "http /openapi.json": Entry(_A.PUBLIC, (
        f"{S}test_surface_http.py::test_public_routes_answer_anonymous_callers",
        "tests/inference/test_openapi.py::test_the_schema_is_public_and_names_no_ones_data"),
        note="the OpenAPI document: routes and this deployment's limits, never anyone's data (A1111 serves it openly)"),
    "http /docs": Entry(_A.AUTHENTICATED, (
        *HTTP_SWEEP, "tests/inference/test_openapi.py::test_the_docs_page_is_for_signed_in_members_and_loads_only_local_files"),
        note="Swagger UI over /openapi.json; a member's token works in it (Authorize)"),
    "http /login/": Entry(_A.PUBLIC, (
        "tests/test_frontend.py::test_home_requires_sign_in_and_shows_the_members_team_and_models",
        "tests/test_frontend.py::test_wrong_password_shows_an_error")),
    "http /logout/": Entry(_A.PUBLIC, (f"{S}test_surface_http.py::test_public_routes_answer_anonymous_callers",),
                           note="POST only; signs out whoever is signed in"),
    # --- websockets ---
    "websocket /ws/jobs/<str:public_id>": Entry(_A.OWNER_SCOPED, (
        f"{S}test_surface_websocket.py::test_anonymous_job_sockets_are_closed_unauthenticated",
        f"{S}test_surface_websocket.py::test_outsiders_cannot_subscribe_to_alices_job_events",
        f"{S}test_surface_websocket.py::test_cross_site_browser_sockets_are_refused",
        f"{S}test_surface_websocket.py::test_the_owner_gets_her_jobs_events",
        "tests/e2e/test_platform.py::test_websocket_streams_progress_to_the_owner_only",
    )),
    "websocket /^api/predict/(?P<service>[^/]+)(?:/(?P<rest>.*))?$": Entry(_A.AUTHENTICATED, (
        "tests/inference/test_eas_watch.py::test_the_handshake_is_refused_without_the_services_token",
        "tests/inference/test_eas_watch.py::test_a_services_token_cannot_watch_another_services_sink",
        "tests/inference/test_eas_watch.py::test_nonsense_parameters_refuse_the_handshake",
        "tests/inference/test_eas_watch.py::test_the_input_queue_cannot_be_watched",
        "tests/inference/test_eas_watch.py::test_the_server_answers_pings_and_redelivers_after_a_tcp_abort",
    ), note="the EAS sink's watch: a token of that service in the handshake's Authorization, else the "
            "handshake is refused (403); the service is named in the path, its token reaches it alone"),
    "websocket /": Entry(_A.PUBLIC, (
        "tests/security/test_platform_server.py::test_websocket_to_an_unknown_path_is_refused_without_a_traceback",
    ), note="the catch-all after every websocket route: refuses the handshake (403), serves nothing"),
    # --- mounts in front of Django ---
    "asgi /ui": Entry(_A.PUBLIC, (f"{S}test_surface_asgi.py::test_the_workspace_mount_sends_anonymous_callers_to_sign_in",),
                      note="a 301 to /ui/ and nothing else"),
    "asgi /ui/<path>": Entry(_A.AUTHENTICATED, (
        f"{S}test_surface_asgi.py::test_the_workspace_mount_sends_anonymous_callers_to_sign_in",
        f"{S}test_surface_asgi.py::test_anonymous_workspace_websockets_are_closed",
        "tests/e2e/test_workspaces.py::test_anonymous_ui_redirects_to_login_and_anonymous_websocket_is_closed",
        "tests/e2e/test_workspaces.py::test_each_member_gets_a_process_of_their_own",
        "tests/e2e/test_workspaces.py::test_members_fetch_their_own_files_and_nobody_else_s",
        "tests/frontend/test_workspace_proxy_rules.py::test_file_urls_resolve_inside_the_members_own_folders_only",
        "tests/frontend/test_workspace_proxy_rules.py::test_only_allowed_hosts_reach_the_workspace",
        "tests/frontend/test_workspace_proxy_rules.py::test_internal_headers_never_go_back_to_the_browser",
        # Every workspace function's file inputs, in process and through the running platform.
        f"{S}test_workspace_files.py::test_no_workspace_function_takes_another_member_s_file",
        f"{S}test_workspace_files.py::test_a_body_naming_a_foreign_file_anywhere_is_refused",
        "tests/e2e/test_workspaces.py::test_a_workspace_input_naming_another_member_s_file_is_refused",
        "tests/e2e/test_workspaces.py::test_workspace_responses_carry_no_internal_header_and_the_security_headers",
        "tests/e2e/test_workspaces.py::test_a_forged_host_never_reaches_the_workspace",
    ), note="no id in the URL: the caller's own workspace process is the only upstream"),
    "asgi /static/<path>": Entry(_A.PUBLIC, (f"{S}test_surface_asgi.py::test_static_files_are_public_and_only_static",),
                                 note="collected static assets (admin CSS/JS), no user content",
                                 extra={"served_when_setting": "SERVE_STATIC"}),
}

# Every route of the admin site's own URLconf (`admin.site.urls`): staff only, checked by AdminSite.
ADMIN_FAMILY = Entry(_A.OPERATOR, (
    *OPERATOR_SWEEP,
    "tests/test_frontend.py::test_admin_is_for_operators",
), note="the admin login page and the catch-all answer anonymous callers with a redirect to it")

# Public routes inside the admin family: its sign-in page, and sign-out (anonymous: a redirect).
ADMIN_PUBLIC = {"/admin/login/", "/admin/logout/"}


def entry_for(route: Route) -> Entry | None:
    """The registry's entry for a served route (admin routes through their family)."""
    if route.key in ROUTES:
        return ROUTES[route.key]
    if route.family == "admin":
        if route.pattern in ADMIN_PUBLIC:
            return Entry(_A.PUBLIC, (f"{S}test_surface_http.py::test_public_routes_answer_anonymous_callers",),
                         note="the admin sign-in and sign-out pages")
        return ADMIN_FAMILY
    return None


# --- attack classes and their tests ----------------------------------------------------------------

W = "tests/worker/"
IMAGES = "tests/a1111/test_images.py::"
ZOO = "tests/inference/test_model_downloads.py::"  # model downloads by URL (the ModelZoo)
ATTACKS: dict[str, tuple[str, ...] | None] = {
    # SSRF through URL-valued image inputs (A1111 verify_url TOCTOU; Gradio CVE-2024-4325; B.5 #3-#6)
    "ssrf: private, loopback and link-local addresses in image URLs": (
        f"{IMAGES}test_non_public_addresses",
        f"{IMAGES}test_loopback_in_any_spelling_is_refused_and_never_contacted",
        f"{IMAGES}test_private_addresses_are_refused",
        f"{IMAGES}test_every_resolved_address_must_be_allowed",
        "tests/a1111/test_sdapi_routes.py::test_image_link_to_a_private_address_is_refused_unfetched",
        f"{ZOO}test_a_private_address_not_on_the_allow_list_is_refused",
    ),
    "ssrf: check-then-fetch (DNS rebinding) and redirects to private hosts": (
        f"{IMAGES}test_connection_goes_to_the_checked_address_with_the_original_host",
        f"{IMAGES}test_redirect_to_a_private_address_is_refused_at_the_hop",
        f"{IMAGES}test_redirect_to_a_refused_scheme",
        f"{IMAGES}test_redirects_are_followed_and_capped",
        f"{ZOO}test_a_redirect_from_the_mirror_to_a_forbidden_host_is_refused",
    ),
    "ssrf: file://, gopher:// and other schemes": (
        f"{IMAGES}test_only_http_and_https_schemes",
        f"{IMAGES}test_file_url_is_refused_even_with_a_fetcher",
        f"{IMAGES}test_urls_are_refused_without_a_fetcher",
        "tests/a1111/test_sdapi_routes.py::test_image_link_must_be_a_url_string",
    ),
    "fetch: endless, oversize, compressed or slow bodies": (
        f"{IMAGES}test_endless_body_is_cut_at_max_bytes",
        f"{IMAGES}test_declared_oversize_body_is_refused_before_reading",
        f"{IMAGES}test_compressed_responses_are_refused",
        f"{IMAGES}test_slow_loris_body_hits_the_overall_deadline",
        f"{IMAGES}test_silent_server_times_out",
        f"{ZOO}test_an_oversize_download_is_stopped",
    ),
    "decompression bomb in an uploaded image (Pillow MAX_IMAGE_PIXELS)": (
        f"{IMAGES}test_decompression_bomb_is_refused_from_the_header_without_decoding",
        f"{IMAGES}test_header_over_max_pixels_is_refused_before_decoding",
        f"{IMAGES}test_pillows_bomb_warning_is_a_refusal_even_with_a_generous_limit",
        "tests/a1111/test_pnginfo.py::test_bomb_header_is_not_decoded",
        "tests/a1111/test_pnginfo.py::test_metadata_is_read_without_decoding_pixels_over_the_limit",
    ),
    "oversize request bodies and images": (
        f"{IMAGES}test_oversize_encoded_input_is_refused_before_decoding",
        f"{IMAGES}test_decoded_size_limit_applies_to_bytes",
        "tests/a1111/test_sdapi_routes.py::test_a_body_over_the_request_limit_is_a_413",
        "tests/a1111/test_sdapi_routes.py::test_a_20_mb_image_is_refused_before_decoding",
        "tests/a1111/test_extras_api.py::test_the_output_cap_follows_the_input_pixel_limit",
        "tests/e2e/test_workspaces.py::test_uploads_are_capped_with_a_message",
    ),
    "resource exhaustion through generation parameters (size, steps, batch, prompt length)": (
        "tests/inference/test_api.py::test_bad_input_is_a_400_naming_the_field",
        "tests/inference/test_generation.py::test_limits_are_configurable",
        "tests/inference/test_generation.py::test_hires_fix_fields_and_limits",
        "tests/inference/test_prompts.py::test_length_limit",
        "tests/inference/test_prompts.py::test_bracket_depth_limit_guards_against_quadratic_prompts",
    ),
    "pickle code execution in model files (.ckpt/.pt; InvokeAI CVE-2024-12029, A1111 safe.py)": (
        f"{W}test_checkpoints.py::test_pickle_checkpoint_is_refused_without_unpickling",
        f"{W}test_hypernetwork.py::test_malicious_pickle_is_refused_and_never_runs",
        f"{W}test_gfpgan.py::test_unreadable_files_and_pickles_with_code_are_refused",
    ),
    "path traversal in file routes and save paths (Gradio /file=, ComfyUI /view, B.5 #1-#2)": (
        "tests/frontend/test_workspace_proxy_rules.py::test_file_urls_resolve_inside_the_members_own_folders_only",
        "tests/frontend/test_workspace_proxy_rules.py::test_normalise_collapses_slashes_and_dots_but_keeps_dotdot",
        "tests/a1111/test_sdapi_routes.py::test_save_dir_outside_the_members_directory_is_refused",
        "tests/tenants/test_tenants.py::test_usernames_that_are_not_folder_names_are_refused",
        "tests/e2e/test_workspaces.py::test_members_fetch_their_own_files_and_nobody_else_s",
        f"{S}test_uploads_scope.py::test_bad_paths_are_refused_before_anything_is_stored",
        f"{S}test_uploads_scope.py::test_a_link_out_of_the_home_is_refused_at_start_and_when_swapped_in_later",
    ),
    "vulnerable Gradio internal routes (component_server CVE-2024-1561/34511, /proxy=, /queue/join URLs)": (
        "tests/frontend/test_workspace_proxy_rules.py::test_risky_gradio_routes_are_blocked",
        "tests/frontend/test_workspace_proxy_rules.py::test_the_component_server_is_open_only_when_allowed",
        "tests/frontend/test_workspace_proxy_rules.py::test_the_guard_lets_the_secret_through_but_not_to_blocked_routes",
    ),
    "the Gradio port reached directly, around the proxy": (
        "tests/frontend/test_workspace_proxy_rules.py::test_the_guard_refuses_requests_without_the_secret",
        "tests/frontend/test_workspace_proxy_rules.py::test_the_guard_refuses_a_repeated_secret_header",
        "tests/frontend/test_workspace_proxy_rules.py::test_the_guard_refuses_websockets_without_the_secret",
        "tests/frontend/test_workspace_proxy_rules.py::test_a_short_secret_is_refused_at_start",
        "tests/e2e/test_workspaces.py::test_the_gradio_port_refuses_requests_without_the_secret",
        "tests/e2e/test_workspaces.py::test_a_secret_from_before_a_restart_is_refused",
    ),
    "forged identity headers through the proxy (X-Forwarded-User, X-Atelier-*; B.5 #13)": (
        "tests/frontend/test_workspace_proxy_rules.py::test_identity_headers_and_platform_cookies_never_reach_the_workspace",
        "tests/frontend/test_workspace_proxy_rules.py::test_the_shared_upstream_pool_never_keeps_a_cookie",
        "tests/e2e/test_workspaces.py::test_client_supplied_secret_and_identity_headers_do_not_reach_the_workspace",
    ),
    "cross-site requests and websockets riding the session cookie (CSRF, CSWSH)": (
        "tests/inference/test_api.py::test_a_session_cookie_may_read_but_not_write",
        "tests/frontend/test_workspace_proxy_rules.py::test_cross_site_origins_are_told_apart",
        "tests/e2e/test_workspaces.py::test_cross_site_posts_are_refused",
        f"{S}test_surface_websocket.py::test_cross_site_browser_sockets_are_refused",
    ),
    "cross-tenant and cross-member object access by id (IDOR; Langflow GHSA-7grx-3xcx-2xv5; B.5 #10)": (
        f"{S}test_surface_http.py::test_outsiders_get_404_for_alices_objects",
        f"{S}test_surface_websocket.py::test_outsiders_cannot_subscribe_to_alices_job_events",
        JOBS_404, E2E_404,
        "tests/e2e/test_a1111_client.py::test_another_member_sees_neither_alices_jobs_nor_her_options",
        "tests/e2e/test_workspace_browser.py::test_alice_generates_in_her_workspace_and_charlie_cannot_see_it",
    ),
    "routes without authentication (InvokeAI scan_folder #9365; every route declares auth)": (
        f"{S}test_surface_registry.py::test_every_served_route_is_in_the_registry",
        f"{S}test_surface_http.py::test_anonymous_callers_never_get_a_2xx",
    ),
    "process-global state: one user's interrupt or options reach another (A1111 shared.state/opts)": (
        "tests/a1111/test_sdapi_routes.py::test_progress_and_interrupt_touch_only_the_callers_jobs",
        "tests/a1111/test_sdapi_routes.py::test_options_are_per_member",
        "tests/a1111/test_sdapi_routes.py::test_the_vae_option_is_per_member_and_must_be_one_they_may_use",
    ),
    "config dump leaking secrets (A1111 /sdapi/v1/cmd-flags #17411)": (
        f"{S}test_surface_http.py::test_cmd_flags_dumps_no_configuration",
    ),
    "other members' private models, LoRAs and ControlNets by name": (
        "tests/a1111/test_sdapi_routes.py::test_models_are_scoped_to_the_member",
        "tests/inference/test_api.py::test_prompt_loras_must_be_ones_the_user_has",
        "tests/a1111/test_controlnet_api.py::test_another_members_controlnet_is_unknown_and_disabled_units_are_ignored",
    ),
    "server paths leaked in job JSON": (
        f"{S}test_surface_http.py::test_job_json_names_no_server_paths",
    ),
    "redelivered or stale task messages run a job twice (B.5 #16)": (
        "tests/inference/test_dispatch.py::test_claim_is_compare_and_set_so_a_redelivered_or_stale_message_does_nothing",
        "tests/scheduler/test_policy.py::test_a_job_listed_twice_is_handed_out_once",
    ),
    "worker killed mid-job (B.5 #14)": (
        "tests/inference/test_dispatch.py::test_a_silent_worker_is_declared_dead_and_its_job_requeued_then_failed_at_the_cap",
        "tests/e2e/test_platform.py::test_a_worker_killed_mid_job_does_not_lose_it",
    ),
    "open redirect after sign-in or language switch (Gradio CVE-2024-4940 class)": (
        f"{S}test_surface_http.py::test_redirects_stay_on_this_site",
    ),
    "user-installed extensions and custom nodes (code execution; ComfyUI-Manager #1125)": None,
    "model upload through the web (InvokeAI /models/install)": (
        *UPLOADS_SCOPE,
        "tests/tenants/test_uploads.py::test_a_file_whose_sha256_differs_is_deleted_with_a_422",
        "tests/tenants/test_uploads.py::test_two_uploads_of_one_name_at_once_the_first_to_finish_wins",
        "tests/tenants/test_uploads.py::test_an_uploaded_checkpoint_is_alices_at_once_and_invisible_to_charlie",
    ),
    "Gradio share=True tunnels (CVE-2024-47871)": None,
    "idempotency keys for retried submits (B.5 #17)": None,
}

ATTACKS_OUT_OF_SCOPE_REASONS: dict[str, str] = {
    "user-installed extensions and custom nodes (code execution; ComfyUI-Manager #1125)":
        "no route installs code: extensions are an operator-managed allow-list in Django admin (operator routes above)",
    "Gradio share=True tunnels (CVE-2024-47871)":
        "workspaces bind loopback behind the proxy; no code path calls launch(share=True)",
    "idempotency keys for retried submits (B.5 #17)":
        "not a feature yet: POST /api/v1/jobs has no Idempotency-Key support, so a retried submit is a second job",
}


# --- test ids ---------------------------------------------------------------------------------

def split_test_id(test_id: str) -> tuple[str, str]:
    """("tests/a.py", "test_x") for "tests/a.py::test_x[param]" (brackets dropped)."""
    path, separator, name = test_id.partition("::")
    if not separator or not path.endswith(".py") or not name:
        raise ValueError(f"{test_id!r} is not 'tests/path.py::test_name'")
    return path, name.split("[", 1)[0]


def functions_defined_in(path: str) -> set[str]:
    """Names of the module-level test functions (and `Class::test_method` ids) a test file defines.

    Read by parsing, not importing, so GPU-only and e2e modules can be checked everywhere.
    """
    source = (REPO_ROOT / path).read_text()
    names: set[str] = set()
    for node in ast.parse(source, filename=path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    names.add(f"{node.name}::{item.name}")
    return names


def missing_tests(test_ids: tuple[str, ...] | list[str]) -> list[str]:
    """The ids among `test_ids` whose file or function does not exist."""
    missing = []
    cache: dict[str, set[str]] = {}
    for test_id in test_ids:
        path, name = split_test_id(test_id)
        if path not in cache:
            cache[path] = functions_defined_in(path) if (REPO_ROOT / path).is_file() else set()
        if name not in cache[path]:
            missing.append(test_id)
    return missing


# --- the workspace's Gradio functions ----------------------------------------------------------
# Each function wired in a member's workspace Blocks (`frontend.workspace.ui.build_workspace`),
# by name, with the tests that prove it reads and writes the caller's own things only. Every one
# of them is also called with another member's file in each file-capable input by
# `test_workspace_files.py::test_no_workspace_function_takes_another_member_s_file`; the list
# makes a new function fail until its author names what proves its ownership.
_UI = "tests/frontend/test_workspace_ui.py::"
_BP = "tests/frontend/test_workspace_beautiful_prompt.py::"
_XYZ = "tests/frontend/test_workspace_xyz.py::"
WORKSPACE_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "on_load": (f"{_UI}test_defaults_persist_per_member", f"{_UI}test_language_switch_relabels_the_workspace_and_is_remembered",
                f"{S}test_workspace_tabs.py::test_the_page_load_hides_a_tab_hidden_after_the_process_started"),
    "generate_txt2img": (f"{_UI}test_submit_creates_alices_job_with_the_form_parameters",
                         f"{_XYZ}test_generate_with_the_plot_submits_its_cells_and_shows_the_grid_then_the_cells",
                         "tests/e2e/test_workspace_browser.py::test_alice_generates_in_her_workspace_and_charlie_cannot_see_it"),
    "generate_img2img": (f"{_UI}test_img2img_with_a_painted_mask_submits_image_and_mask",),
    # the txt2img Script dropdown's X/Y/Z plot: the member's own plot (job group) only
    "script_changed": (f"{_XYZ}test_the_script_dropdown_reveals_the_axes_fields",),
    "cancel": (f"{_UI}test_cancel_stops_the_members_own_job_only",
               f"{S}test_workspace_extras.py::test_charlie_cannot_use_alice_s_gallery_folder_or_job",
               f"{_UI}test_a_reloaded_page_reattaches_to_the_members_own_running_job_only",
               f"{_XYZ}test_cancel_and_reload_reach_the_members_own_plot_only"),
    "reattach": (f"{_UI}test_a_reloaded_page_reattaches_to_the_members_own_running_job_only",
                 f"{_UI}test_a_reloaded_page_shows_the_last_finished_result_of_each_tab",
                 f"{_XYZ}test_cancel_and_reload_reach_the_members_own_plot_only"),
    "refresh_gallery": (f"{_UI}test_charlies_gallery_never_holds_alices_images",),
    "select_image": (f"{_UI}test_charlies_gallery_never_holds_alices_images",),
    "send_to_img2img": (f"{S}test_workspace_files.py::test_no_workspace_function_takes_another_member_s_file",),
    "read_pnginfo": (f"{_UI}test_png_info_reads_the_parameters_and_sends_them_to_txt2img",
                     f"{S}test_workspace_tabs.py::test_a_hidden_tab_s_function_is_refused_by_fn_index_and_by_api_name",
                     f"{S}test_workspace_files.py::test_a_function_still_takes_the_member_s_own_upload"),
    "send_pnginfo_to_txt2img": (f"{_UI}test_png_info_reads_the_parameters_and_sends_them_to_txt2img",),
    "save_defaults": (f"{_UI}test_defaults_persist_per_member",),
    "save_face_settings": (f"{_UI}test_face_restoration_settings_are_the_members_own_options",),
    "set_language": (f"{_UI}test_language_switch_relabels_the_workspace_and_is_remembered",),
    # the Styles panel (issue 20): the member's own styles only are saved and deleted
    "save_style": (f"{S}test_prompt_styles.py::test_saving_a_style_of_the_same_name_never_touches_anothers",
                   "tests/frontend/test_workspace_styles.py::test_save_then_generate_then_delete_the_members_own_style"),
    "delete_style": (f"{S}test_prompt_styles.py::test_charlie_cannot_delete_alices_or_a_public_style",
                     "tests/frontend/test_workspace_styles.py::test_team_and_public_styles_are_not_deleted_from_the_workspace"),
    "apply_extensions": (f"{_UI}test_the_prompt_styles_extension_shows_its_panel_and_merges_styles_only_when_enabled",),
    "insert_network": (f"{_UI}test_the_network_browser_lists_the_members_own_and_shared_models_only",),
    "refresh_model_lists": (f"{_UI}test_the_network_browser_lists_the_members_own_and_shared_models_only",),
    "refresh_controlnet_models": (f"{_UI}test_the_controlnet_panel_has_three_closed_units_and_lists_the_members_models_only",),
    "controlnet_image_uploaded": (f"{_UI}test_the_preprocessor_picks_its_sliders_and_an_upload_enables_the_unit",),
    "controlnet_module_changed": (f"{_UI}test_the_preprocessor_picks_its_sliders_and_an_upload_enables_the_unit",),
    # the BeautifulPrompt tab (issue 22): the member's own promptgen jobs and models only
    "generate_prompts": (f"{_BP}test_generate_queues_alices_promptgen_job_and_follows_it_to_its_results",
                         f"{_BP}test_the_model_list_is_the_member_s_own_team_s_and_public_models",
                         f"{_BP}test_the_extension_is_installed_and_its_tab_shows_only_while_the_member_has_it_on",
                         "tests/e2e/test_promptgen_and_tabs_browser.py::test_bob_expands_a_prompt_and_sends_it_to_txt2img"),
    "cancel_prompts": (f"{_BP}test_history_reload_and_cancel_reach_the_member_s_own_expansions_only",),
    "reattach_prompts": (f"{_BP}test_history_reload_and_cancel_reach_the_member_s_own_expansions_only",
                         f"{_BP}test_a_running_expansion_is_followed_after_a_reload"),
    "show_expansion": (f"{_BP}test_history_reload_and_cancel_reach_the_member_s_own_expansions_only",),
    "refresh_promptgen_models": (f"{_BP}test_the_model_list_is_the_member_s_own_team_s_and_public_models",),
    "send_prompt_to_txt2img": (f"{_BP}test_a_result_goes_to_txt2img_or_img2img_appended_or_in_place_of_the_prompt",),
    "send_prompt_to_img2img": (f"{_BP}test_a_result_goes_to_txt2img_or_img2img_appended_or_in_place_of_the_prompt",),
    # the Extras tab, the seed buttons and Skip (issue 20): the member's own images, folders and jobs only
    "generate_extras": (f"{S}test_workspace_extras.py::test_charlie_cannot_use_alice_s_gallery_folder_or_job",
                        "tests/frontend/test_workspace_extras.py::test_a_folder_outside_the_member_s_own_is_refused_with_a_message"),
    "reattach_extras": (f"{S}test_workspace_extras.py::test_a_page_load_shows_the_member_s_own_last_extras_result_only",),
    "refresh_extras_gallery": (f"{S}test_workspace_extras.py::test_the_extras_gallery_lists_the_member_s_own_images_only",),
    "extras_from_single": (f"{S}test_workspace_extras.py::test_the_extras_gallery_lists_the_member_s_own_images_only",),
    "extras_from_gallery": (f"{S}test_workspace_extras.py::test_the_extras_gallery_lists_the_member_s_own_images_only",),
    "extras_from_folder": (f"{S}test_workspace_extras.py::test_the_extras_gallery_lists_the_member_s_own_images_only",),
    "random_seed": (f"{S}test_skip_and_seed.py::test_the_workspace_skip_and_seed_reach_the_member_s_own_job_only",),
    "reuse_seed": (f"{S}test_skip_and_seed.py::test_the_workspace_skip_and_seed_reach_the_member_s_own_job_only",),
    "skip": (f"{S}test_skip_and_seed.py::test_the_workspace_skip_and_seed_reach_the_member_s_own_job_only",),
}
