"""What every workspace tab shares: the `Tab` base class and the `callback` wrapper.

Gradio runs sync callbacks in worker threads; each callback is wrapped by `callback`, which
drops stale database connections the way Django does around a request, and turns a
`WorkspaceError` into a `gr.Error` toast (never a traceback).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr
from django.contrib.auth.models import AbstractUser
from django.db import close_old_connections, connection

from frontend.workspace import gallery
from frontend.workspace.jobs import WorkspaceError, as_workspace_error, member_errors

if TYPE_CHECKING:
    from frontend.workspace.ui import Workspace


def _fresh_connections() -> None:
    """Django closes unusable or expired connections around each request; do the same around
    each callback (Gradio's threads live long). Not inside a transaction (tests)."""
    if not connection.in_atomic_block:
        close_old_connections()


def callback(fn: Callable) -> Callable:
    """Wrap a Gradio callback method: fresh DB connections, and every error as a gr.Error
    toast with a message for the member (never a traceback; unexpected ones are logged)."""

    def as_gradio_error(exc: Exception, args: tuple) -> gr.Error:
        language = getattr(args[0], "language", "en") if args else "en"
        return gr.Error(as_workspace_error(exc, language).message, print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            _fresh_connections()
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise as_gradio_error(exc, args) from None
        return generator

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        _fresh_connections()
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise as_gradio_error(exc, args) from None
    return call


class Tab:
    """One tab: its components, built inside the workspace's Blocks, and its callbacks."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    @property
    def user(self) -> AbstractUser:
        return self.workspace.user

    @property
    def language(self) -> str:
        return self.workspace.language

    def t(self, key: str) -> str:
        return self.workspace.t(key)

    def tr(self, component: Any, key: str, attr: str = "label", **params: Any) -> Any:
        return self.workspace.tr(component, key, attr, **params)


class PicksImages(Tab):
    """A tab showing images whose pick shows its infotext and can be sent to img2img."""

    @callback
    def select_image(self, refs: list, evt: gr.SelectData) -> tuple[Any, str]:
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not refs or not 0 <= index < len(refs):
            return None, ""
        ref = refs[index]
        with member_errors(self.language):
            _image, _params, infotext = gallery.image_and_params(self.user, ref)
        return list(ref), infotext

    @callback
    def send_to_img2img(self, ref: Any, refs: list | None = None) -> tuple:
        """The picked image (else the first one shown) and its parameters, into img2img."""
        ref = ref or (refs[0] if refs else None)
        if not ref:
            raise WorkspaceError(self.t("select_image_first"))
        with member_errors(self.language):
            image, params, _infotext = gallery.image_and_params(self.user, ref)
        return (
            image, params.get("prompt", ""), params.get("negative_prompt", ""), params.get("sampler_name", "Euler a"),
            params.get("scheduler", "Automatic"), params.get("steps", 20), params.get("cfg_scale", 7.0),
            params.get("width", image.width), params.get("height", image.height), params.get("seed", -1),
            gr.Tabs(selected="img2img"),
        )
