"""Gradio components next to Twisted (daphne) in one process.

Importing Twisted's reactor (Django's `daphne` app does, at `django.setup()`) makes
zope.interface put a `ClassProvides` descriptor named `__provides__` on `abc.ABC`. It is
readable on classes only: on an instance it raises AttributeError. Gradio's `Component.__init__`
looks up every name in `dir(type(self))` on the instance (to find server functions), so
after that import every component construction fails with `AttributeError: __provides__`.

Shadowing the name with a plain `None` on Gradio's `ComponentBase` (which comes before
`abc.ABC` in every component's MRO) keeps those lookups safe; nothing in Gradio uses
zope.interface. Idempotent, whichever is imported first; applied on import by `ui.py`.
The workspace server leaves `daphne` out of its INSTALLED_APPS anyway; this keeps the Blocks
buildable wherever daphne is loaded too: the test suite, a shell, the web process.
"""

from __future__ import annotations


def gradio_twisted_compat() -> None:
    from gradio.components.base import ComponentBase

    if "__provides__" not in vars(ComponentBase):
        ComponentBase.__provides__ = None  # type: ignore[attr-defined]


gradio_twisted_compat()
