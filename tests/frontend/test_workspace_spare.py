"""What a spare workspace process does before its member comes (issue 19, item 3).

`frontend.workspace.server.defer_import` keeps a module Gradio imports but the workspace never
uses (pandas) from running until someone reads it; `frontend.workspace.rehearsal.rehearse`
spends the first-time costs of a workspace on a stand-in member that owns nothing, and leaves
nothing behind. (That a whole workspace process loads no torch and leaves pandas unrun is
checked in a fresh interpreter by `tests/test_layers.py`.)
"""

from __future__ import annotations

from tests.safetensors_files import write_placeholder_model
import os
import sys
import tempfile
from pathlib import Path

import pytest

from frontend.workspace.server import defer_import, deferred_module_loaded


@pytest.fixture
def module_that_counts(tmp_path, monkeypatch) -> str:
    """A module named `counted_runs_mod` that appends to a file each time its body runs."""
    runs = tmp_path / "runs"
    (tmp_path / "counted_runs_mod.py").write_text(
        f"with open({str(runs)!r}, 'a') as f:\n    f.write('run\\n')\nVALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "counted_runs_mod"
    sys.modules.pop("counted_runs_mod", None)


def runs_of(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_deferred_module_runs_only_when_first_read_and_then_once(module_that_counts, tmp_path) -> None:
    defer_import(module_that_counts)
    import counted_runs_mod  # the import statement alone runs nothing

    assert runs_of(tmp_path) == 0 and not deferred_module_loaded(module_that_counts)
    assert counted_runs_mod.__file__.endswith("counted_runs_mod.py")  # what walkers of sys.modules read
    assert runs_of(tmp_path) == 0
    assert counted_runs_mod.VALUE == 42  # the first read imports it
    assert runs_of(tmp_path) == 1 and deferred_module_loaded(module_that_counts)
    from counted_runs_mod import VALUE  # later imports and reads get the real module

    assert VALUE == 42 and sys.modules[module_that_counts].VALUE == 42
    with pytest.raises(AttributeError):
        counted_runs_mod.MISSING  # noqa: B018
    assert runs_of(tmp_path) == 1


def test_deferring_a_module_already_imported_or_absent_changes_nothing() -> None:
    json_module = sys.modules["json"]
    defer_import("json")
    assert sys.modules["json"] is json_module and deferred_module_loaded("json")
    defer_import("no_such_module_atelier")
    assert "no_such_module_atelier" not in sys.modules


def test_the_stand_in_member_owns_nothing_and_sees_no_member_s_things(personas, settings) -> None:
    from frontend.workspace.rehearsal import stand_in_member
    from frontend.workspace.ui import build_workspace
    from tenants.selectors import membership_for_user
    from tenants.workdirs import user_model_dir, user_workdir

    lora = user_model_dir("alice", "Lora") / "alice-secret-style.safetensors"
    lora.parent.mkdir(parents=True, exist_ok=True)
    write_placeholder_model(lora, "not really a LoRA")
    stand_in = stand_in_member()
    assert stand_in.pk == 0 and not stand_in.__class__.objects.filter(pk=0).exists()
    assert not user_workdir(stand_in.get_username()).exists()
    assert membership_for_user(stand_in) is None
    workspace = build_workspace(stand_in).atelier_workspace
    assert not any("alice" in label for label, _insert in workspace.network_choices())
    assert stand_in.get_username() in workspace.header_html("")
    assert not user_workdir(stand_in.get_username()).exists()  # building wrote no folder of its own


def test_a_rehearsal_builds_mounts_and_renders_then_leaves_nothing(personas, settings) -> None:
    from django.contrib.auth import get_user_model

    from frontend.models import WorkspacePreferences
    from frontend.workspace.rehearsal import rehearse

    users_before = get_user_model().objects.count()
    temp_before = os.environ.get("GRADIO_TEMP_DIR")
    leftovers_before = set(Path(tempfile.gettempdir()).glob("atelier-spare-*"))
    assert rehearse(interrupted=lambda: False) == ["database", "build", "mount", "page"]
    assert get_user_model().objects.count() == users_before and not WorkspacePreferences.objects.exists()
    assert os.environ.get("GRADIO_TEMP_DIR") == temp_before
    assert set(Path(tempfile.gettempdir()).glob("atelier-spare-*")) == leftovers_before
    assert not list((settings.DATA_DIR / "users").glob("spare-rehearsal-*"))


def test_a_rehearsal_stops_between_steps_when_the_assignment_is_waiting(personas) -> None:
    from frontend.workspace.rehearsal import rehearse

    assert rehearse(interrupted=lambda: True) == []
    answers = iter([False, False, True])  # the member arrives during the build
    assert rehearse(interrupted=lambda: next(answers)) == ["database", "build"]
