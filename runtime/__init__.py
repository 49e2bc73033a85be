"""Inference worker core: checkpoint detection, offline pipeline loading and the tiny demo model."""
