"""`manage.py make_tiny_model`: write the random-weight demo checkpoint (idempotent).

With `--promptgen gpt2|bloom|all` it writes tiny random-weight prompt-generation models instead
(`atelier-tiny-gpt2`, `atelier-tiny-bloom`) into the public `promptgen` folder, as an operator
places a real one (see `runtime/tiny/promptgen.py`). With `--interrogate` it writes tiny random-weight
BLIP, CLIP and tagger folders and A1111's four category files into the public `BLIP`, `CLIP`,
`deepbooru` and `interrogate` folders, so `/sdapi/v1/interrogate` answers (`runtime/tiny/interrogate.py`).
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

TINY_PROMPTGEN_NAMES = {"gpt2": "atelier-tiny-gpt2", "bloom": "atelier-tiny-bloom"}


class Command(BaseCommand):
    help = (
        "Write a tiny random-weight SD1.x-shaped checkpoint into the public Stable-diffusion folder "
        "(or, with --promptgen, tiny prompt-generation models into the public promptgen folder)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", type=Path, default=None, help="file (or promptgen folder) to write (default: public models)")
        parser.add_argument("--force", action="store_true", help="overwrite an existing file")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--promptgen", choices=[*TINY_PROMPTGEN_NAMES, "all"], default=None,
                            help="write tiny prompt-generation model folders of this family instead")
        parser.add_argument("--interrogate", action="store_true",
                            help="write tiny interrogate models (BLIP, CLIP, a tagger, category files) instead")

    def handle(
        self, *args, output: Path | None, force: bool, seed: int, promptgen: str | None, interrogate: bool = False,
        **options,
    ):
        if interrogate:
            self._interrogate(force=force, seed=seed)
            return
        if promptgen is not None:
            self._promptgen(promptgen, output=output, force=force, seed=seed)
            return
        from runtime.tiny.model import write_tiny_checkpoint

        target = output or settings.ATELIER_PUBLIC_MODEL_DIRS["Stable-diffusion"] / settings.ATELIER_TINY_MODEL_NAME
        if target.exists() and not force:
            self.stdout.write(f"{target} already exists")
            return
        write_tiny_checkpoint(target, seed=seed)
        self.stdout.write(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")

    def _promptgen(self, family: str, *, output: Path | None, force: bool, seed: int) -> None:
        from runtime.tiny.promptgen import write_tiny_promptgen

        families = list(TINY_PROMPTGEN_NAMES) if family == "all" else [family]
        for name in families:
            if output is not None and len(families) == 1:
                target = output
            else:
                target = (output or settings.ATELIER_PUBLIC_MODEL_DIRS["promptgen"]) / TINY_PROMPTGEN_NAMES[name]
            if target.exists() and not force:
                self.stdout.write(f"{target} already exists")
                continue
            write_tiny_promptgen(target, name, seed=seed)
            size = sum(path.stat().st_size for path in target.iterdir())
            self.stdout.write(f"wrote {target} ({size / 1e3:.0f} KB)")

    def _interrogate(self, *, force: bool, seed: int) -> None:
        from runtime.tiny.interrogate import TINY_NAMES, write_tiny_interrogate

        folders = {kind: settings.ATELIER_PUBLIC_MODEL_DIRS[kind] for kind in ("BLIP", "CLIP", "interrogate", "deepbooru")}
        blip = folders["BLIP"] / TINY_NAMES["blip"]
        if blip.exists() and not force:
            self.stdout.write(f"{blip} already exists")
            return
        for name, path in write_tiny_interrogate(folders, seed=seed).items():
            self.stdout.write(f"wrote {name}: {path}")
