"""The APIs described: OpenAPI 3.1 for `/api/v1/`, `/sdapi/v1/`, `/controlnet/` and the EAS queue.

- `schemas.py`: the request and response bodies as pydantic models (A1111's model names and
  field names for `/sdapi/v1`, so clients generated from A1111's schema fit).
- `operations.py`: the table of operations, one row per route and method, naming its models.
- `document.py`: builds the OpenAPI document from those two, with this deployment's limits
  (`inference/limits.py`) written into the bounds that depend on them.
- `views.py`: serves it at `/openapi.json`.

Nothing here parses a request: the parsers in `a1111/` stay the one reader of each field.
The models are kept honest by tests rather than by hope: `tests/inference/test_openapi.py`
fails when a route is served without an operation here, when a view's methods differ from
the table's, and when a bound in a request model differs from what the parser enforces; the
Schemathesis run (`tests/e2e/test_api_fuzz.py`) checks every response against its model.
"""
