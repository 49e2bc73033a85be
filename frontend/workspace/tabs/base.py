"""What every workspace tab shares: the `Tab` base class and the `callback` wrapper.

Gradio runs sync callbacks in worker threads; each callback is wrapped by `callback`, which
hands the thread's database connection back the way Django does around a request (before and
after each call, and after each step of a generator, which Gradio may run on another thread),
refuses a function of a
tab the operators hid (checked at each call: hiding applies to running workspaces too), and
turns a `WorkspaceError` into a `gr.Error` toast (never a traceback).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr
from django.contrib.auth.models import AbstractUser
from django.db import close_old_connections, connection

from frontend.member_selectors import hidden_tabs_for_user
from frontend.workspace import gallery
from frontend.workspace.jobs import WorkspaceError, as_workspace_error, member_errors

if TYPE_CHECKING:
    from frontend.workspace.ui import Workspace


def _fresh_connections() -> None:
    """Django closes unusable or expired connections before and after each request; do the same
    around each callback and each step of a generator callback. Gradio's threads live long and a
    generator's steps may each run on a different one: on PostgreSQL a connection is a pool
    checkout (CONN_MAX_AGE 0), and one left with an idle thread is lost to every other thread
    until that one runs again, so a busy workspace once ran its pool dry and its page load
    waited 30 s for a connection. Not inside a transaction (tests)."""
    if not connection.in_atomic_block:
        close_old_connections()


def _refusal(args: tuple, needs: tuple[str, ...]) -> str | None:
    """Why the tab owning this callback (`args[0]`, when it is a `Tab`) may not run it now."""
    owner = args[0] if args else None
    return owner.refusal(needs) if isinstance(owner, Tab) else None


def callback(
    fn: Callable | None = None, *, needs: tuple[str, ...] = (), skip_when_refused: int | None = None,
) -> Callable:
    """Wrap a Gradio callback method: fresh DB connections, the tab's call-time check, and every
    error as a gr.Error toast with a message for the member (never a traceback; unexpected ones
    are logged).

    The check (`Tab.refusal`): a tab the operators hid (or, for an extension's tab, one the member
    turned off) refuses its functions even when called by `fn_index` or `api_name` on a process
    built before the change. `needs`: other tabs the function fills (their hiding refuses it too).
    `skip_when_refused`: a page-load function's number of outputs; refused, it changes none of
    them quietly instead of showing an error on every load.
    """
    if fn is None:
        return functools.partial(callback, needs=needs, skip_when_refused=skip_when_refused)

    def as_gradio_error(exc: Exception, args: tuple) -> gr.Error:
        language = getattr(args[0], "language", "en") if args else "en"
        return gr.Error(as_workspace_error(exc, language).message, print_exception=False)

    def skipped() -> Any:
        return gr.skip() if skip_when_refused == 1 else tuple(gr.skip() for _ in range(skip_when_refused or 0))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            _fresh_connections()
            try:
                if (refused := _refusal(args, needs)) is not None:
                    if skip_when_refused is not None:
                        _fresh_connections()
                        yield skipped()
                        return
                    raise WorkspaceError(refused)
                with contextlib.closing(fn(*args, **kwargs)) as steps:
                    for value in steps:
                        _fresh_connections()  # this step's thread may not run the next one
                        yield value
            except gr.Error:
                raise
            except Exception as exc:
                raise as_gradio_error(exc, args) from None
            finally:
                _fresh_connections()
        generator.atelier_callback = True  # type: ignore[attr-defined]
        return generator

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        _fresh_connections()
        try:
            if (refused := _refusal(args, needs)) is not None:
                if skip_when_refused is not None:
                    return skipped()
                raise WorkspaceError(refused)
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise as_gradio_error(exc, args) from None
        finally:
            _fresh_connections()
    call.atelier_callback = True  # type: ignore[attr-defined]
    return call


class Tab:
    """One tab: its components, built inside the workspace's Blocks, and its callbacks.

    `tab_id` is its Gradio tab id (`frontend/workspace/tab_ids.py`); `block` its `gr.Tab`, once built.
    """

    tab_id: str

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.block: gr.Tab | None = None

    def refusal(self, needs: tuple[str, ...] = (), hidden: frozenset[str] | None = None) -> str | None:
        """Why this tab's functions may not run now (None: they may): the operators hid it, or a
        tab it fills (`needs`), for the member's tenant or the whole platform. Read from the
        database at each call (`hidden`: the hidden tabs, when the caller just read them), not
        from what the process was built with."""
        hidden = hidden_tabs_for_user(self.user) if hidden is None else hidden
        for tab_id in (self.tab_id, *needs):
            if tab_id in hidden:
                return self.t("tab_hidden").format(tab=self.t(f"tab_{tab_id}"))
        return None

    def initially_visible(self) -> bool:
        """Whether the tab shows when built (an extension's tab: while the member has it on)."""
        return True

    def shown_now(self, hidden: frozenset[str] | None = None) -> bool:
        """Whether the tab is to be shown on a page load now (an operator may have hidden it since)."""
        return self.refusal(hidden=hidden) is None

    def visibility_now(self, hidden: frozenset[str] | None = None) -> bool | str:
        """The tab's `visible` for an update: True, or "hidden" (Gradio 6.31's tab bar ignores an
        update to False that arrives with the page load; "hidden" removes the tab's button)."""
        return True if self.shown_now(hidden) else "hidden"

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

    @callback(needs=("img2img",))
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
