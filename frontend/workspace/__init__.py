"""The per-member Gradio workspace: the app (`ui.py`) and the process that serves it."""
