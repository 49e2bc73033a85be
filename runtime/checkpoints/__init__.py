"""Checkpoints: loading single-file models, VAEs, the bundled model configs."""
