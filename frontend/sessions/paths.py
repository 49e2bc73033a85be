"""Where one member's workspace process keeps its files, inside their working directory.

    users/<user>/outputs/              their generated images (the only `allowed_paths`)
    users/<user>/inputs/               init images and masks they sent
    users/<user>/.workspace/           the process's current directory
    users/<user>/.workspace/tmp/       GRADIO_TEMP_DIR: uploads and files Gradio serves
    users/<user>/.workspace/examples/  GRADIO_EXAMPLES_CACHE

The web process uses the same paths to decide which Gradio file URLs a member may fetch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tenants.workdirs import user_workdir


@dataclass(frozen=True)
class WorkspacePaths:
    workdir: Path
    outputs: Path
    inputs: Path
    home: Path
    temp: Path
    examples_cache: Path

    @classmethod
    def for_username(cls, username: str) -> WorkspacePaths:
        workdir = user_workdir(username).resolve()
        home = workdir / ".workspace"
        return cls(
            workdir=workdir,
            outputs=workdir / "outputs",
            inputs=workdir / "inputs",
            home=home,
            temp=home / "tmp",
            examples_cache=home / "examples",
        )

    def ensure(self) -> None:
        for folder in (self.outputs, self.inputs, self.temp, self.examples_cache):
            folder.mkdir(parents=True, exist_ok=True)

    def servable_roots(self) -> tuple[Path, ...]:
        """Folders whose files the member's Gradio file routes may return."""
        return (self.outputs, self.inputs, self.temp, self.examples_cache)
