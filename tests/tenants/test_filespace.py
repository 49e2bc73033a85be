"""The one path-resolution helper of the file routes (`tenants/filespace.py`), on its own:
every bad name refused with a message, links out of a folder refused, who may write where."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import pytest
from django.conf import settings

from a1111.errors import Forbidden, InvalidField, NotFound
from tenants.filespace import Area, clean_relative, open_dir_nofollow, resolve_place

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("bad, says", [
    ("../charlie/outputs", "'..'"), ("models/../../charlie", "'..'"), ("./x", "'.'"),
    ("%2e%2e/charlie", "percent-encoded"), ("outputs%2f..%2fx", "percent-encoded"),
    ("/etc/passwd", "absolute"), ("a\x00b", "NUL"), ("a\nb", "control"), ("a\\..\\b", "not '"),
    ("x" * 256, "255 bytes"), ("é" * 128, "255 bytes"), ("a/" * 2100, "4096 bytes"),
])
def test_names_that_are_not_plain_are_refused_saying_why(bad, says) -> None:
    with pytest.raises(InvalidField, match=says):
        clean_relative(bad)


def test_plain_names_pass_and_the_root_is_dot() -> None:
    assert clean_relative("") == clean_relative("/") == PurePosixPath(".")
    assert clean_relative("models//Lora/my lora (v2).safetensors") == PurePosixPath("models/Lora/my lora (v2).safetensors")
    assert clean_relative("x" * 255) == PurePosixPath("x" * 255)


def test_each_area_is_its_owners_and_writes_are_for_its_writers(personas) -> None:
    alice, bob, charlie, admin = (personas[name] for name in ("alice", "bob", "charlie", "admin"))
    home = resolve_place(alice, "home", "outputs", write=True)
    assert home.root == (settings.DATA_DIR / "users" / "alice").resolve() and home.display == "home/outputs"
    assert resolve_place(alice, "team", "models/Lora", write=True).writable  # alice is studio-a's admin
    with pytest.raises(Forbidden, match="team's admins"):
        resolve_place(bob, "team", "models/Lora", write=True)
    assert resolve_place(bob, "team", "models/Lora").root.name == "studio-a"
    assert resolve_place(charlie, "team", "").root.name == "studio-b"  # never another team's
    public = resolve_place(bob, "public", "Lora/x.safetensors")
    assert public.area == Area.PUBLIC and not public.writable and public.display == "public/Lora/x.safetensors"
    with pytest.raises(Forbidden, match="operators"):
        resolve_place(bob, "public", "Lora", write=True)
    assert resolve_place(admin, "public", "Lora", write=True).writable
    with pytest.raises(NotFound, match="no public folder"):
        resolve_place(bob, "public", "secrets/x")
    with pytest.raises(NotFound, match="no file area"):
        resolve_place(bob, "etc", "passwd")
    with pytest.raises(NotFound, match="operators have no home"):
        resolve_place(admin, "home", "")


def test_a_link_out_of_the_folder_is_refused_and_a_walk_never_follows_one(personas, tmp_path) -> None:
    alice = personas["alice"]
    root = resolve_place(alice, "home", "").root
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "escape").symlink_to(elsewhere)
    with pytest.raises(Forbidden, match="leads outside"):
        resolve_place(alice, "home", "escape/secret.txt")
    (root / "inside").mkdir()
    (root / "to-inside").symlink_to(root / "inside")
    assert resolve_place(alice, "home", "to-inside").path == (root / "inside").resolve()  # a link within is fine
    with pytest.raises(OSError):  # but a writer's walk refuses any link on the way
        os.close(open_dir_nofollow(root, PurePosixPath("to-inside/x"), create=True))
    descriptor = open_dir_nofollow(root, PurePosixPath("new/deeper"), create=True)
    os.close(descriptor)
    assert (root / "new" / "deeper").is_dir() and (root / "new").stat().st_mode & 0o777 == 0o700
