"""Builds the OpenAPI 3.1 document from the operation table and the pydantic models.

`build_document(limits)` is pure: the same table, models and limits give the same document.
The bounds marked with `schemas.limit(...)` take this deployment's values here, and a
default the limits would refuse (A1111's 50 steps under a 30-step limit) is shown as the
value a request without the field really gets (the parser clamps it the same way).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from a1111.generation import Limits
from inference.openapi.operations import CONTROLNET, EAS, NATIVE, OPERATIONS, SDAPI, Operation
from inference.openapi.schemas import LIMIT_KEY, HTTPError, NativeError

REF = "#/components/schemas/{model}"
TITLE = "Atelier"
ERROR_TEXT = {
    400: "The request is malformed or a value is refused; the body says which field and why.",
    401: "No valid token (the EAS queue: not one of the service's tokens, or no such service): send `Authorization: Bearer <your API token>` (or Basic `username:token`).",
    403: "You may not do this (not a member of a team, an operator-only route, a model your team denies you, or a request over your plan's size limits).",
    404: "Not found, or not yours: objects of other members are never shown to you.",
    409: "Conflicts with the current state.",
    413: "The body is over the size limit: send large images as http(s) URLs.",
    422: "A field is refused (A1111's status for a failed validation); `body` names it.",
    429: "Too many jobs queued, or a quota of your plan or team is used up: the message names the limit, what is used and when it resets (`Retry-After`, in seconds).",
    500: "The job failed on the worker (A1111 answers 500 too); `detail` says why.",
}
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token from your Tokens page."},
    "basicAuth": {"type": "http", "scheme": "basic", "description": "`username:token`, as A1111 clients send for --api-auth."},
    "easToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                 "description": "One of the EAS service's tokens (raw, as the SDK sends it, or `Bearer <token>`)."},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "sessionid",
                      "description": "Your browser session; reads (GET) only: writes need a token."},
}


def _models(operations: tuple[Operation, ...]) -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {"HTTPError": HTTPError, "NativeError": NativeError}
    for op in operations:
        for slot in (op.request, op.response):
            for model in slot if isinstance(slot, tuple) else (slot,) if slot else ():
                seen.setdefault(model.__name__, model)
    return list(seen.values())


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _body_schema(slot: type[BaseModel] | tuple[type[BaseModel], ...]) -> dict[str, Any]:
    if isinstance(slot, tuple):
        return {"anyOf": [_ref(m) for m in slot]} if len(slot) > 1 else _ref(slot[0])
    return _ref(slot)


def _response_schema(slot: type[BaseModel] | tuple[type[BaseModel], ...] | None) -> dict[str, Any]:
    if slot is None:
        return {"type": "null"}
    if isinstance(slot, tuple):
        return {"type": "array", "items": _ref(slot[0])}
    return _ref(slot)


def _path_parameters(path: str) -> list[dict[str, Any]]:
    parameters = []
    for name in (part[1:-1] for part in path.split("/") if part.startswith("{")):
        schema = {"type": "integer", "minimum": 0} if name == "index" else {"type": "string", "maxLength": 64}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return parameters


def _operation(op: Operation) -> dict[str, Any]:
    error_model = NativeError if op.tag == NATIVE else HTTPError
    if op.content_type == "application/json":
        ok_schema = _response_schema(op.response) if op.tag != EAS else {}
    elif op.content_type == "text/plain":
        ok_schema = {"type": "string"}
    else:
        ok_schema = {"type": "string", "format": "binary"}
    content = {op.content_type: {"schema": ok_schema}}
    for media_type in op.also_content_types:
        content[media_type] = {"schema": {"type": "string"}}
    if op.tag == EAS and op.method == "GET":  # the SDK asks for protobuf; JSON otherwise
        content["application/vnd.google.protobuf"] = {"schema": {"type": "string", "format": "binary"}}
    responses: dict[str, Any] = {str(op.status): {"description": "OK", "content": content}}
    for status in op.also:
        responses[str(status)] = {"description": "Nothing came within the timeout."}
    for status, when in op.also_with_body:
        responses[str(status)] = {"description": when, "content": content}
    error_schema = _ref(error_model) if op.error_content_type == "application/json" else {"type": "string", "minLength": 1}
    for status in sorted({*op.errors, 405}):
        text = ERROR_TEXT.get(status, "Method not allowed.")
        responses[str(status)] = {"description": text, "content": {op.error_content_type: {"schema": error_schema}}}
    if op.long_running and op.tag == SDAPI:
        responses["500"] = {"description": ERROR_TEXT[500], "content": {"application/json": {"schema": _ref(error_model)}}}
    body: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _path_parameters(op.path)
        + [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
           for name, schema, text in op.query],
        "responses": responses,
    }
    if op.description:
        body["description"] = op.description
    if op.request is not None:
        # /sdapi/v1 reads a missing body as `{}` (A1111 clients post some routes without one)
        body["requestBody"] = {"required": op.tag == NATIVE, "content": {"application/json": {"schema": _body_schema(op.request)}}}
    body.update(op.extra)
    if op.tag == EAS:
        body["security"] = [{"easToken": []}]
    return body


def _apply_limits(node: Any, limits: Limits) -> None:
    """Replace every `x-atelier-limit` marker with the live values (in place)."""
    if isinstance(node, list):
        for item in node:
            _apply_limits(item, limits)
        return
    if not isinstance(node, dict):
        return
    marker = node.pop(LIMIT_KEY, None)
    if marker:
        values = {keyword: getattr(limits, field) for keyword, field in marker.items()}
        # `int | None` is anyOf[{integer…}, {null}]: the bounds belong to the non-null branch
        target = next((b for b in node.get("anyOf", ()) if b.get("type") not in (None, "null")), node)
        target.update(values)
        default = node.get("default")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            node["default"] = min(max(default, values.get("minimum", default)), values.get("maximum", default))
    for value in node.values():
        _apply_limits(value, limits)


def build_document(limits: Limits, *, server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every JSON API route, with `limits` in its bounds."""
    _, definitions = models_json_schema([(m, "validation") for m in _models(OPERATIONS)], ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": "1.0.0",
            "description": (
                "The platform's APIs: the native jobs API (`/api/v1`), AUTOMATIC1111 1.10's API (`/sdapi/v1`, "
                "unchanged A1111 clients work), the ControlNet extension's routes (`/controlnet`) and the "
                "PAI-EAS queue service (`/api/predict`). Every route needs your API token; everything you "
                "see is your own or your team's."
            ),
        },
        "servers": [{"url": server_url}],
        "tags": [{"name": tag} for tag in (NATIVE, SDAPI, CONTROLNET, EAS)],
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearerAuth": []}, {"basicAuth": []}, {"sessionCookie": []}],
    }
    _apply_limits(document, limits)
    return document

