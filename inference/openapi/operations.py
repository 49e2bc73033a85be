"""The table of API operations: one row per route and method, naming its request and response models.

Paths are OpenAPI templates (`/api/v1/jobs/{public_id}`); `tests/inference/test_openapi.py`
matches them against the URLconf (`<str:public_id>` is `{public_id}`) and each view's
`allowed_methods` (set by `api_view` / `sdapi`), so a route added without a row here, or a
method the table does not list, fails the suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from inference.openapi import schemas as s

NATIVE, SDAPI, CONTROLNET, EAS = "Native API", "A1111 API (/sdapi/v1)", "ControlNet extension", "EAS queue"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    response: type[BaseModel] | tuple[type[BaseModel], ...] | None  # a tuple: a JSON array of that model
    request: type[BaseModel] | tuple[type[BaseModel], ...] | None = None  # a tuple of several: any of them
    query: tuple[tuple[str, dict, str], ...] = ()  # (name, JSON schema, description)
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"  # of the 200 response
    description: str = ""
    long_running: bool = False  # holds the request open until a worker has finished the job
    status: int = 200
    extra: dict = field(default_factory=dict)
    error_content_type: str = "application/json"  # the EAS queue answers errors as plain text
    also: tuple[int, ...] = ()  # other success statuses without a body (the queue's 204)
    also_with_body: tuple[tuple[int, str], ...] = ()  # other success statuses with the same body: (status, when)
    also_content_types: tuple[str, ...] = ()  # other media types of the 200 (text), e.g. CSV for `format=csv`

    @property
    def operation_id(self) -> str:
        words = [part for part in self.path.replace("{", "").replace("}", "").split("/") if part]
        return "_".join([self.method.lower(), *(w.replace("-", "_").replace(".", "_") for w in words)])


def _list(model: type[BaseModel]) -> tuple[type[BaseModel], ...]:
    return (model,)


JOB_ID = "public_id"
_FLAG = {"type": "string", "enum": ["true", "false", "1", "0", ""]}
_INT = {"type": "string", "pattern": "^(-?[0-9]{1,19})?$"}  # empty: the default
_EAS_TEXT = "text/plain"


def _eas(path: str, what: str, *, route: bool = False) -> tuple[Operation, ...]:
    """The queue protocol of one queue (input or sink) as PAI-EAS SDK 0.36 calls it."""
    common = dict(error_content_type=_EAS_TEXT)
    put = Operation(
        "POST", path, f"Put a request into the {what} (the body is the raw request); answers its index", EAS,
        None, query=(("_priority_", _INT, "1 (or more): ahead of the owner's own 0s."),
                     ("_eos_", _FLAG, "End of stream: answered OK, nothing else happens.")),
        errors=(400, 401, 413, 429), content_type=_EAS_TEXT, error_content_type=_EAS_TEXT,
        description="Any other query parameter is a tag of the item. Authorization: one of the service's tokens.",
        extra={"requestBody": {"required": False, "content": {"application/json": {"schema": {}},
                                                               "application/octet-stream": {"schema": {}}}}},
    )
    if route:
        return (put,)
    return (
        put,
        Operation("GET", path, f"Read the {what}: attributes, one item, or the next items (long poll)", EAS, None,
                  query=(("_attrs_", _FLAG, "The queue's attributes."), ("_search_", _FLAG, "Find one item by _index_."),
                         ("_index_", _INT, "Start at this index."), ("_length_", _INT, "How many (at least 1)."),
                         ("_timeout_", {"type": "string"}, "Wait up to this long (5s, 500ms; at most 4.5 s)."),
                         ("_auto_delete_", _FLAG, "Delete what is read (default true)."),
                         ("requestId", {"type": "string"}, "Only this request's item.")),
                  errors=(400, 401), also=(204,), **common),
        Operation("PUT", path, f"Commit items of the {what}", EAS, None, content_type=_EAS_TEXT,
                  query=(("_indexes_", {"type": "string"}, "Comma-separated indexes (required)."),),
                  errors=(400, 401), **common),
        Operation("DELETE", path, f"Delete items of the {what}, or truncate it", EAS, None, content_type=_EAS_TEXT,
                  query=(("_indexes_", {"type": "string"}, "Comma-separated indexes."),
                         ("_trunc_", _FLAG, "Delete everything up to _index_."), ("_index_", _INT, "With _trunc_.")),
                  errors=(400, 401), **common),
    )
_FILE_AREA = {"name": "area", "in": "path", "required": True, "description": "home (yours), team (your team's) or public.",
              "schema": {"type": "string", "enum": ["home", "team", "public"]}}
_FILE_PATH = {"name": "relative", "in": "path", "required": True, "description": "A path inside the area ('/' between names).",
              "schema": {"type": "string", "maxLength": 1024}}


def _files_operations(path: str) -> tuple[Operation, ...]:
    """The FileBrowser's three methods on an area's root or on a path inside it."""
    params = [_FILE_AREA, _FILE_PATH] if "{relative}" in path else [_FILE_AREA]
    zip_query = {"name": "zip", "in": "query", "required": False, "schema": {"type": "string", "enum": ["1", "true", "0", "false", ""]},
                 "description": "1: download the folder as a zip (streamed; 413 over ATELIER_ZIP_MAX_BYTES)."}
    return (
        Operation("GET", path, "List a folder, download a file, or download a folder as a zip", NATIVE, s.FileListing,
                  errors=(400, 401, 403, 404, 413), also_content_types=("application/octet-stream", "application/zip"),
                  extra={"parameters": [*params, zip_query]}, also=(302,),
                  description="A folder: its entries as JSON. A file: the file itself, as an attachment (a file of "
                              "home/outputs kept in object storage: a 302 to a short-lived signed URL answering it "
                              "as an attachment). "
                              "Another member's or another team's files are never reachable: 404."),
        Operation("POST", path, "Create a folder, or rename/move a file or folder within the area", NATIVE,
                  s.FileActionResult, request=s.FileAction, errors=(400, 401, 403, 404, 409),
                  also_with_body=((201, "mkdir: the folder was created."),), extra={"parameters": params},
                  description="Never overwrites (409). Built-in folders (models, models/<kind>, outputs) stay. "
                              "Team: its admins; public: operators (403 for anyone else). With the session cookie "
                              "send the CSRF token in X-CSRFToken."),
        Operation("DELETE", path, "Delete a file, or a folder with everything in it", NATIVE, s.FileDeleted,
                  errors=(400, 401, 403, 404), extra={"parameters": params},
                  description="A symbolic link is removed itself, never followed. Built-in folders stay (403)."),
    )


_SIGNED_REDIRECT = ("With outputs in object storage (ATELIER_S3_BUCKET): a 302 to a short-lived signed URL of the "
                    "image where it lies; follow redirects to get it.")
_READ = (401,)
_USAGE_QUERY = (
    ("month", {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}, "The month, YYYY-MM, in the tenant's time zone."),
    ("tenant", {"type": "string"}, "A tenant's slug (operators: any; tenant admins: their own)."),
    ("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}, "json or csv."),
)
_WRITE = (400, 401, 403, 404, 413, 429)

OPERATIONS: tuple[Operation, ...] = (
    # --- native API ------------------------------------------------------------------------
    Operation("GET", "/api/v1/jobs", "Your jobs, newest first", NATIVE, s.JobList,
              query=(("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "How many."),),
              errors=(400, 401)),
    Operation("POST", "/api/v1/jobs", "Submit a job (txt2img, img2img or extras); poll it by id", NATIVE,
              s.JobCreated, request=(s.NativeTxt2ImgJob, s.NativeImg2ImgJob, s.NativeExtrasJob), errors=_WRITE, status=201),
    Operation("GET", "/api/v1/jobs/{public_id}", "One of your jobs: status, progress, images, why it waits", NATIVE,
              s.JobDetail,
              errors=(401, 404)),
    Operation("POST", "/api/v1/jobs/{public_id}/cancel", "Cancel one of your jobs", NATIVE, s.Job,
              errors=(401, 404)),
    Operation("GET", "/api/v1/jobs/{public_id}/images/{index}", "An image of your job (PNG)", NATIVE, None,
              errors=(401, 404), content_type="image/png", also=(302,), description=_SIGNED_REDIRECT),
    Operation("GET", "/api/v1/jobs/{public_id}/control-maps/{index}", "A ControlNet detect map of your job (PNG)",
              NATIVE, None, errors=(401, 404), content_type="image/png", also=(302,), description=_SIGNED_REDIRECT),
    Operation("POST", "/api/v1/job-groups", "Submit an X/Y/Z plot: one job per cell; poll the group by id", NATIVE,
              s.JobGroupCreated, request=s.NativeXyzPlot, errors=_WRITE, status=201,
              description="All cells or none are queued; each is an ordinary job (metered, scheduled, "
                          "/api/v1/jobs/<id>). At most ATELIER_MAX_XYZ_CELLS cells."),
    Operation("GET", "/api/v1/job-groups/{group_id}", "One of your plots: its cells, their jobs, the grid when ready",
              NATIVE, s.JobGroup, errors=(401, 404)),
    Operation("POST", "/api/v1/job-groups/{group_id}/cancel", "Cancel every unfinished cell of your plot", NATIVE,
              s.JobGroup, errors=(401, 404)),
    Operation("GET", "/api/v1/job-groups/{group_id}/grid", "The grid of your plot (PNG)", NATIVE, None,
              errors=(401, 404), content_type="image/png"),
    Operation("GET", "/api/v1/models", "The checkpoints you may use: yours, your team's, the public ones",
              NATIVE, s.ModelList, errors=_READ),
    Operation("POST", "/api/v1/promptgen", "Expand a short prompt into detailed ones (BeautifulPrompt)", NATIVE,
              s.PromptgenJob, request=s.PromptgenRequest, errors=_WRITE, long_running=True,
              also_with_body=((201, "Queued, not waited for (wait: false): poll the job."),
                              (202, "Not finished within ATELIER_PROMPTGEN_WAIT_SECONDS: poll the job.")),
              description="A job of kind promptgen on the GPU workers; 200 when it finished while the call waited."),
    Operation("GET", "/api/v1/promptgen/models", "The prompt-generation models you may use", NATIVE,
              s.PromptgenModelList, errors=_READ),
    Operation("GET", "/api/v1/usage", "Your usage this month", NATIVE, s.Usage, errors=_READ),
    Operation("GET", "/api/v1/usage/records", "Usage records of a month or of dates (yours; an admin's tenant's; any for operators)",
              NATIVE, s.UsageExport, query=_USAGE_QUERY + (
                  ("from", {"type": "string", "format": "date"}, "First day (YYYY-MM-DD), with `to`, instead of `month`."),
                  ("to", {"type": "string", "format": "date"}, "Last day (YYYY-MM-DD), inclusive."),
                  ("user", {"type": "string"}, "One member (tenant admins: of their tenant; members: only themselves)."),
              ), errors=(400, 401, 404), also_content_types=("text/csv",),
              description="Streamed; one row per record, `amount` at the record's own price. Members get their own "
                          "records only: naming another member or tenant is a 404."),
    Operation("GET", "/api/v1/usage/statement", "A tenant's monthly statement (tenant admins; operators)", NATIVE,
              s.UsageStatement, query=_USAGE_QUERY, errors=(400, 401, 404), also_content_types=("text/csv",),
              description="Lines per member, adjustments, the monthly fee, the allowance credit and the total, "
                          "exact to the currency's minor unit. Members get 404."),
    *_files_operations("/api/v1/files/{area}/"),
    *_files_operations("/api/v1/files/{area}/{relative}"),
    Operation("GET", "/api/v1/workers", "The worker pool (operators only)", NATIVE, s.WorkerList,
              errors=(401, 403)),
    Operation("POST", "/api/v1/uploads", "Start a resumable upload into one of your file areas", NATIVE, s.Upload,
              request=s.UploadStart, errors=(400, 401, 403, 404, 409, 413, 429), status=201,
              description="Refused before anything is stored when the name exists (409), the size is over the "
                          "maximum or over a storage limit (413; a limit's refusal adds `limit`, `used_bytes` and "
                          "`limit_bytes`), or you have too many unfinished uploads (429). A browser session needs "
                          "the CSRF token in X-CSRFToken."),
    Operation("GET", "/api/v1/uploads/{upload_id}", "One of your uploads: where to resume (`offset`) and its state",
              NATIVE, s.Upload, errors=(401, 404)),
    Operation("PUT", "/api/v1/uploads/{upload_id}", "Send the next chunk of your upload (raw bytes)", NATIVE, s.Upload,
              errors=(400, 401, 403, 404, 409, 413, 422),
              description="Header `Content-Range: bytes <first>-<last>/<size>`; `first` must be the session's "
                          "`offset` (else 409 with `offset`), the chunk at most `chunk_size` bytes (413). The last "
                          "chunk verifies the size and SHA-256 (422: the bytes are dropped) and places the file; "
                          "409 when the name was taken meanwhile (the first upload to finish wins).",
              extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary"}}}}}),
    Operation("DELETE", "/api/v1/uploads/{upload_id}", "Cancel your unfinished upload (its bytes are deleted)", NATIVE,
              s.Upload, errors=(401, 403, 404, 409)),
    # --- /sdapi/v1 -------------------------------------------------------------------------
    Operation("POST", "/sdapi/v1/txt2img", "Text to image (waits for the images)", SDAPI, s.TextToImageResponse,
              request=s.StableDiffusionTxt2ImgProcessingAPI, errors=(*_WRITE, 422), long_running=True),
    Operation("POST", "/sdapi/v1/img2img", "Image to image (waits for the images)", SDAPI, s.ImageToImageResponse,
              request=s.StableDiffusionImg2ImgProcessingAPI, errors=(*_WRITE, 422), long_running=True),
    Operation("POST", "/sdapi/v1/extra-single-image", "Upscale / restore faces of one image", SDAPI,
              s.ExtrasSingleImageResponse, request=s.ExtrasSingleImageRequest, errors=(*_WRITE, 422),
              long_running=True),
    Operation("POST", "/sdapi/v1/extra-batch-images", "Upscale / restore faces of several images", SDAPI,
              s.ExtrasBatchImagesResponse, request=s.ExtrasBatchImagesRequest, errors=(*_WRITE, 422),
              long_running=True),
    Operation("POST", "/sdapi/v1/interrogate", "Caption an image (BLIP + CLIP) or tag it (deepdanbooru); waits for the text",
              SDAPI, s.InterrogateResponse, request=s.InterrogateRequest, errors=(*_WRITE, 422), long_running=True,
              description="A job of kind interrogate on the GPU workers, with the models an operator placed in the "
                          "public models folders (404 naming `model` and what to install when they are missing) "
                          "and the caller's interrogate options."),
    Operation("POST", "/sdapi/v1/png-info", "The generation parameters stored in an image", SDAPI,
              s.PNGInfoResponse, request=s.PNGInfoRequest, errors=(400, 401, 413, 422)),
    Operation("GET", "/sdapi/v1/progress", "Progress of your running job", SDAPI, s.ProgressResponse,
              query=(("skip_current_image", {"type": "boolean", "default": False}, "Accepted, ignored."),),
              errors=(401, 422)),
    Operation("POST", "/sdapi/v1/interrupt", "Stop your running job", SDAPI, s.Empty, errors=_READ),
    Operation("POST", "/internal/progress", "Progress of your job submitted with force_task_id (A1111's UI API)", SDAPI,
              s.InternalProgressResponse, request=s.InternalProgressRequest, errors=(400, 401, 422)),
    Operation("POST", "/sdapi/v1/skip", "Skip the images your running job is making now (its current batch-count iteration); it keeps the rest", SDAPI, None,
              errors=_READ),
    Operation("GET", "/sdapi/v1/options", "Your options", SDAPI, s.Options, errors=_READ),
    Operation("POST", "/sdapi/v1/options", "Set your options: any of A1111's keys, each of its type (422 names an unknown key or a wrong type)", SDAPI, None,
              request=s.Options, errors=(400, 401, 404, 413, 422)),
    Operation("GET", "/sdapi/v1/cmd-flags", "Server flags (the harmless ones)", SDAPI, s.Flags, errors=_READ),
    Operation("GET", "/sdapi/v1/samplers", "Samplers", SDAPI, _list(s.SamplerItem), errors=_READ),
    Operation("GET", "/sdapi/v1/schedulers", "Noise schedules", SDAPI, _list(s.SchedulerItem), errors=_READ),
    Operation("GET", "/sdapi/v1/upscalers", "Upscalers you may use", SDAPI, _list(s.UpscalerItem), errors=_READ),
    Operation("GET", "/sdapi/v1/latent-upscale-modes", "Latent upscale modes for hires fix", SDAPI,
              _list(s.LatentUpscalerModeItem), errors=_READ),
    Operation("GET", "/sdapi/v1/sd-models", "Checkpoints you may use", SDAPI, _list(s.SDModelItem), errors=_READ),
    Operation("GET", "/sdapi/v1/sd-vae", "VAEs you may use", SDAPI, _list(s.SDVaeItem), errors=_READ),
    Operation("GET", "/sdapi/v1/loras", "LoRAs you may use", SDAPI, _list(s.LoraItem), errors=_READ),
    Operation("GET", "/sdapi/v1/hypernetworks", "Hypernetworks you may use", SDAPI, _list(s.HypernetworkItem),
              errors=_READ),
    Operation("GET", "/sdapi/v1/embeddings", "Textual-inversion embeddings you may use", SDAPI,
              s.EmbeddingsResponse, errors=_READ),
    Operation("GET", "/sdapi/v1/face-restorers", "Face restorers you may use", SDAPI, _list(s.FaceRestorerItem),
              errors=_READ),
    Operation("GET", "/sdapi/v1/realesrgan-models", "Real-ESRGAN models you may use", SDAPI,
              _list(s.RealesrganItem), errors=_READ),
    Operation("GET", "/sdapi/v1/prompt-styles", "Prompt styles you may use (yours, your team's, public)", SDAPI,
              _list(s.PromptStyleItem), errors=_READ),
    Operation("GET", "/sdapi/v1/script-info", "Scripts and their arguments", SDAPI, _list(s.ScriptInfo),
              errors=_READ),
    Operation("GET", "/sdapi/v1/extensions", "Extensions", SDAPI, _list(s.ExtensionItem), errors=_READ),
    Operation("GET", "/sdapi/v1/scripts", "Script names by tab", SDAPI, s.ScriptsList, errors=_READ),
    Operation("GET", "/sdapi/v1/memory", "Memory of the web server (GPU memory is per worker)", SDAPI,
              s.MemoryResponse, errors=_READ),
    *(
        Operation("POST", f"/sdapi/v1/refresh-{what}", f"Refresh the {what} list (folders are read on every request)",
                  SDAPI, None, errors=_READ)
        for what in ("checkpoints", "loras", "vae", "embeddings")
    ),
    Operation("POST", "/sdapi/v1/unload-checkpoint", "Accepted: workers manage their own model caches", SDAPI,
              s.Empty, errors=_READ),
    Operation("POST", "/sdapi/v1/reload-checkpoint", "Accepted: workers manage their own model caches", SDAPI,
              s.Empty, errors=_READ),
    # --- /controlnet -----------------------------------------------------------------------
    Operation("GET", "/controlnet/model_list", "ControlNet models you may use", CONTROLNET, s.ControlNetModelList,
              errors=_READ),
    Operation("GET", "/controlnet/module_list", "ControlNet preprocessors", CONTROLNET, s.ControlNetModuleList,
              errors=_READ),
    Operation("GET", "/controlnet/version", "The extension API version", CONTROLNET, s.ControlNetVersion,
              errors=_READ),
    # --- the EAS queue service (inference/eas/views.py) ---------------------------------------
    *_eas("/api/predict/{service}", "input queue"),
    *_eas("/api/predict/{service}/sink", "sink queue (the results)"),
    *_eas("/api/predict/{service}/sdapi/v1/txt2img", "input queue, as a txt2img request", route=True),
    *_eas("/api/predict/{service}/sdapi/v1/img2img", "input queue, as an img2img request", route=True),
)
