"""The AUTOMATIC1111-compatible HTTP API (/sdapi/v1) and its helpers."""
