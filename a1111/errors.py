"""The errors a client can cause, one hierarchy for every adapter (pure: no Django, no torch).

Every refusal a member can fix is a `RequestError`: a message written for them and, where one
request field is at fault, `field`, the path of that field as the client sent it
(`cfg_scale`, `override_settings.sd_vae`, `alwayson_scripts.controlnet.args[0].weight`).
`str(error)` is `"<field>: <message>"` (just the message without a field).

The subclasses are the kinds an adapter must tell apart; what each becomes is decided in one
place, `inference/api/errors.py`'s `ERROR_TABLE` (the native API and `/sdapi/v1`), and the workspace
shows `str(error)` (`frontend/workspace/jobs.py`):

- `InvalidField`: a value that is malformed or out of range (a 400; `/sdapi/v1` answers 422,
  as A1111's FastAPI validation does);
- `NotFound`: a model or file the member may not use or that does not exist (404);
- `Forbidden`: the member may not do this at all (403);
- `TooLarge`: the request or one of its images is over a size limit (413);
- `TooMany`: a quota is full for now (429);
- `Conflict`: the request clashes with the current state (409).

The older names modules raise and catch (`RequestValidationError`, `ImageInputError`,
`ModelNotFound`, `NotAMember`, `TooManyQueuedJobs`, `PayloadTooLarge`, `ControlNetArgumentError`)
are subclasses of these, so they map the same way everywhere.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidField",
    "NotFound",
    "RequestError",
    "RequestValidationError",
    "TooLarge",
    "TooMany",
]


class RequestError(Exception):
    """A refusal the client can fix; `message` is fit to show them, `field` names what to fix ("" if no one field)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class InvalidField(RequestError, ValueError):
    """A malformed or out-of-range value."""


class NotFound(RequestError, LookupError):
    """A model or file that does not exist, or that the member may not use (the same answer for both)."""


class Forbidden(RequestError, PermissionError):
    """Something the member may not do at all."""


class TooLarge(RequestError, ValueError):
    """The body or one of its images is over a size limit."""


class TooMany(RequestError, PermissionError):
    """A quota is full for now: retry later."""


class Conflict(RequestError):
    """The request clashes with the current state of what it names."""


class Unavailable(RequestError):
    """A service the request needs (the model store, …) does not answer now: retry later. Not the
    client's fault, but not a 500 either: the request was understood and nothing was stored."""


class RequestValidationError(InvalidField):
    """A bad value of one request field (the readers in `a1111/fields.py` raise it)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message, field=field_name)
