"""ControlNet for the worker (being split into modules; everything lives in `loading.py` for now)."""

from .loading import *  # noqa: F403
from .loading import __all__  # noqa: F401
