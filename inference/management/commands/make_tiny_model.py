"""`manage.py make_tiny_model`: write the random-weight demo checkpoint (idempotent)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Write a tiny random-weight SD1.x-shaped checkpoint into the public Stable-diffusion folder."

    def add_arguments(self, parser):
        parser.add_argument("--output", type=Path, default=None, help="file to write (default: public models)")
        parser.add_argument("--force", action="store_true", help="overwrite an existing file")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, output: Path | None, force: bool, seed: int, **options):
        from runtime.tiny.model import write_tiny_checkpoint

        target = output or settings.ATELIER_PUBLIC_MODEL_DIRS["Stable-diffusion"] / settings.ATELIER_TINY_MODEL_NAME
        if target.exists() and not force:
            self.stdout.write(f"{target} already exists")
            return
        write_tiny_checkpoint(target, seed=seed)
        self.stdout.write(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
