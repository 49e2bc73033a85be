"""Schemathesis checks of our own, loaded by the fuzz run through `SCHEMATHESIS_HOOKS`.

- Every 4xx carries the error shape the document promises, with a message that says something:
  `{"error", "field"?}` on `/api/v1`, A1111's `{"error", "detail", "body", "errors"}` on
  `/sdapi/v1` and `/controlnet`, a plain-text message on the EAS queue.
- No answer reaches another member's data: the run as charlie names alice's job ids in every
  path parameter (`ATELIER_FUZZ_FOREIGN_IDS`); a 2xx to such a request, or any of those ids in a
  response the request did not name them in, fails the run.
"""

from __future__ import annotations

import json
import os

import schemathesis

FOREIGN_IDS = [value for value in os.environ.get("ATELIER_FUZZ_FOREIGN_IDS", "").split(",") if value]


def _json(response) -> object:
    try:
        return json.loads(response.content or b"null")
    except ValueError:
        return None


@schemathesis.check
def error_bodies_say_what_to_fix(ctx, response, case) -> None:
    if not 400 <= response.status_code < 500:
        return
    if case.operation.path.startswith("/api/predict/"):  # the EAS queue: plain text, as the SDK shows it
        text = (response.content or b"").decode("utf-8", "replace").strip()
        assert text, f"a {response.status_code} from the EAS queue without a message"
        return
    body = _json(response)
    assert isinstance(body, dict), f"a {response.status_code} without a JSON object body"
    if case.operation.path.startswith("/api/v1/"):
        assert isinstance(body.get("error"), str) and body["error"].strip(), "a native 4xx without an `error` message"
        assert body.get("field") is None or isinstance(body["field"], str), "`field` is not a string"
    else:
        for key in ("error", "detail", "body", "errors"):
            assert isinstance(body.get(key), str), f"an A1111-shaped 4xx without a string `{key}`"
        assert body["detail"].strip(), "an A1111-shaped 4xx with an empty `detail`"


@schemathesis.check
def other_members_objects_stay_out_of_reach(ctx, response, case) -> None:
    if not FOREIGN_IDS:
        return
    asked = json.dumps(case.path_parameters or {}) + json.dumps(case.query or {}, default=str)
    named = [value for value in FOREIGN_IDS if value in asked]
    assert not (named and 200 <= response.status_code < 300), (
        f"{response.status_code} for a request naming another member's object {named}"
    )
    text = response.content.decode("utf-8", "replace") if response.content else ""
    leaked = [value for value in FOREIGN_IDS if value in text and value not in asked]
    assert not leaked, f"the response shows another member's object ids {leaked}"
