"""The native HTTP API: views, the error mapping, the internal API and their URLs."""
