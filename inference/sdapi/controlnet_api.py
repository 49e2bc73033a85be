"""The sd-webui-controlnet extension's list routes, served at `/controlnet/` as the extension does.

`GET /controlnet/model_list` lists the ControlNet models the caller may use (their own, their
team's and the public ones), named as the extension names them (`name [sha256[:8]]`);
`GET /controlnet/module_list` the preprocessors this server runs; `GET /controlnet/version`
the extension API version clients check. Same token auth and error shape as `/sdapi/v1`.
"""

from __future__ import annotations

from django.http import HttpRequest

from inference.sdapi.adapter import sdapi
from inference.model_registry import model_list_for_user

EXTENSION_API_VERSION = 2


@sdapi("GET")
def model_list(request: HttpRequest, user) -> dict:
    return {"model_list": [f"{e.model_name} [{e.sha256[:8]}]" for e in model_list_for_user(user, "ControlNet")]}


@sdapi("GET")
def module_list(request: HttpRequest, user) -> dict:
    from a1111.preprocessors import available_preprocessors, default_thresholds

    modules = available_preprocessors()
    return {
        "module_list": modules,
        "module_detail": {
            name: {"model_free": True, "default_thresholds": list(default_thresholds(name))} for name in modules
        },
    }


@sdapi("GET")
def version(request: HttpRequest, user) -> dict:
    return {"version": EXTENSION_API_VERSION}
