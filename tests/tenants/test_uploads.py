"""Resumable chunked uploads (`/api/v1/uploads`, `tenants/uploads.py`) and storage quotas, through
the real views, database and file system: chunks at the session's offset, resume after an
interruption, verification before the file appears, never overwriting, the quotas refused before
anything is stored, and an uploaded checkpoint that alice lists and uses at once and charlie never sees.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
from django.conf import settings
from django.utils import timezone

from tenants.limits import MEMBER_KEYS, Limits
from tenants.models import Membership, Plan, TenantPlan
from tenants.upload_models import FileUpload
from tenants.uploads import storage_usage, uploads_expire
from tests.safetensors_files import safetensors_bytes
from tests.tenants.upload_helpers import Uploader, sha

pytestmark = pytest.mark.django_db

CHUNK = 1024
# A real safetensors file (what a model folder accepts: tests/safetensors_files.py) of 2,560 bytes:
# three chunks of 1,024, 1,024 and 512
DATA = safetensors_bytes({"w": ("U8", (2560 - 80,))}, fill=bytes(range(256)))
assert len(DATA) == 2560


@pytest.fixture(autouse=True)
def clean_folders(settings):
    """Each test starts with empty homes, team folders and staging (the test DATA_DIR is shared)."""
    settings.ATELIER_UPLOAD_CHUNK_BYTES = CHUNK

    def wipe() -> None:
        for folder in ("users", "uploads", "tenants"):
            shutil.rmtree(settings.DATA_DIR / folder, ignore_errors=True)

    wipe()
    yield
    wipe()


@pytest.fixture
def uploader(client, tokens):
    return lambda name: Uploader(client, tokens[name])


def home(name: str):
    return settings.DATA_DIR / "users" / name


def staged() -> list:
    return sorted((settings.DATA_DIR / "uploads").rglob("*.part"))


def test_a_file_sent_in_chunks_appears_only_once_verified(uploader) -> None:
    alice = uploader("alice")
    started = alice.start("models/Lora/style.safetensors", DATA)
    assert started.status_code == 201, started.content
    session = started.json()
    assert (session["offset"], session["size"], session["chunk_size"], session["state"]) == (0, len(DATA), CHUNK, "open")
    assert session["id"].startswith("up_")
    target = home("alice") / "models" / "Lora" / "style.safetensors"
    for first in (0, CHUNK):
        answer = alice.put(session["id"], DATA[first:first + CHUNK], first, len(DATA))
        assert answer.status_code == 200 and answer.json()["offset"] == first + CHUNK
        assert not target.exists()  # a half-sent file is never in the folder
    last = alice.put(session["id"], DATA[2 * CHUNK:], 2 * CHUNK, len(DATA))
    assert last.status_code == 200, last.content
    assert last.json()["state"] == "complete" and last.json()["offset"] == len(DATA)
    assert target.read_bytes() == DATA
    assert staged() == []  # the part file is gone
    assert alice.get(session["id"]).json()["state"] == "complete"


def test_an_interrupted_upload_resumes_from_its_offset(uploader) -> None:
    alice = uploader("alice")
    upload_id = alice.start("models/Stable-diffusion/big.safetensors", DATA).json()["id"]
    assert alice.put(upload_id, DATA[:CHUNK], 0, len(DATA)).status_code == 200
    # the connection drops in the middle of the second chunk: its body is short
    cut = alice.put(upload_id, DATA[CHUNK:CHUNK + 300], CHUNK, len(DATA), last=2 * CHUNK - 1)
    assert cut.status_code == 400 and "Content-Range" in cut.json()["error"]
    # the client comes back: where does it stand?
    state = alice.get(upload_id).json()
    assert (state["offset"], state["state"]) == (CHUNK, "open")
    # a chunk sent again from an old position is refused, naming where to resume
    again = alice.put(upload_id, DATA[:CHUNK], 0, len(DATA))
    assert again.status_code == 409 and again.json()["offset"] == CHUNK
    final = alice.send(upload_id, DATA, CHUNK, start_at=state["offset"])
    assert final.json()["state"] == "complete"
    assert (home("alice") / "models/Stable-diffusion/big.safetensors").read_bytes() == DATA


def test_chunks_past_the_size_over_the_cap_or_without_a_range_are_refused(uploader, client, tokens) -> None:
    alice = uploader("alice")
    upload_id = alice.start("notes.bin", DATA).json()["id"]
    past = alice.put(upload_id, DATA[:CHUNK], len(DATA) - 10, len(DATA))  # ends 1,014 bytes past the end
    assert past.status_code == 400 and "past" in past.json()["error"]
    wrong_total = alice.put(upload_id, DATA[:CHUNK], 0, len(DATA) + 1)
    assert wrong_total.status_code == 400
    too_big = alice.put(upload_id, DATA[:CHUNK + 1], 0, len(DATA))
    assert too_big.status_code == 413
    no_range = client.generic("PUT", f"/api/v1/uploads/{upload_id}", data=b"x",
                              content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {tokens['alice']}")
    assert no_range.status_code == 400 and "Content-Range" in no_range.json()["error"]
    assert alice.get(upload_id).json()["offset"] == 0


def test_a_file_whose_sha256_differs_is_deleted_with_a_422(uploader) -> None:
    alice = uploader("alice")
    upload_id = alice.start("models/Lora/x.safetensors", DATA, sha256=sha(b"something else")).json()["id"]
    answer = alice.send(upload_id, DATA, CHUNK)
    assert answer.status_code == 422 and "SHA-256" in answer.json()["error"]
    assert not (home("alice") / "models/Lora/x.safetensors").exists()
    assert staged() == []
    assert alice.get(upload_id).json()["state"] == "failed"


def test_two_uploads_of_one_name_at_once_the_first_to_finish_wins(uploader, personas) -> None:
    """alice and bob (both admins of studio-a's team folder) upload the same name at once."""
    Membership.objects.filter(user=personas["bob"]).update(role=Membership.Role.ADMIN)
    alice, bob = uploader("alice"), uploader("bob")
    other = safetensors_bytes({"w": ("U8", (2560 - 80,))}, fill=b"other")
    first = alice.start("models/Lora/shared.safetensors", DATA, area="team").json()["id"]
    second = bob.start("models/Lora/shared.safetensors", other, area="team").json()["id"]
    assert bob.put(second, other[:CHUNK], 0, len(other)).status_code == 200
    assert alice.send(first, DATA, CHUNK).json()["state"] == "complete"
    late = bob.send(second, other, CHUNK, start_at=CHUNK)
    assert late.status_code == 409 and "already exists" in late.json()["error"]
    assert (settings.DATA_DIR / "tenants/studio-a/models/Lora/shared.safetensors").read_bytes() == DATA
    assert bob.get(second).json()["state"] == "failed" and staged() == []


def test_an_existing_name_or_a_folder_is_refused_when_the_upload_starts(uploader) -> None:
    alice = uploader("alice")
    (home("alice") / "models/Lora").mkdir(parents=True, exist_ok=True)
    (home("alice") / "models/Lora/taken.safetensors").write_bytes(b"mine")
    taken = alice.start("models/Lora/taken.safetensors", DATA)
    assert taken.status_code == 409 and "already exists" in taken.json()["error"]
    assert alice.start("models/Lora", DATA).status_code == 409
    assert alice.start("", DATA).status_code == 400
    assert (home("alice") / "models/Lora/taken.safetensors").read_bytes() == b"mine"
    assert FileUpload.objects.count() == 0


@pytest.mark.parametrize(("field", "value"), [("size", -1), ("size", "12"), ("size", True), ("sha256", "abc"),
                                              ("sha256", None), ("area", 3)])
def test_bad_declarations_are_400_naming_the_field(uploader, field, value) -> None:
    answer = uploader("alice").start("a.bin", DATA, **{field: value})
    assert answer.status_code in (400, 404) and answer.json()["field"] == field
    assert FileUpload.objects.count() == 0


def test_a_file_over_the_maximum_size_is_413(uploader, settings) -> None:
    settings.ATELIER_UPLOAD_MAX_BYTES = 1000
    answer = uploader("alice").start("a.bin", DATA)
    assert answer.status_code == 413 and answer.json()["field"] == "size"


def test_an_empty_file_is_placed_at_once(uploader) -> None:
    answer = uploader("alice").start("empty.txt", b"")
    assert answer.status_code == 201 and answer.json()["state"] == "complete"
    assert (home("alice") / "empty.txt").read_bytes() == b""


def test_cancelling_deletes_the_part(uploader) -> None:
    alice = uploader("alice")
    upload_id = alice.start("a.bin", DATA).json()["id"]
    alice.put(upload_id, DATA[:CHUNK], 0, len(DATA))
    assert len(staged()) == 1
    assert alice.delete(upload_id).json()["state"] == "aborted"
    assert staged() == [] and alice.delete(upload_id).status_code == 200
    assert alice.put(upload_id, DATA[CHUNK:2 * CHUNK], CHUNK, len(DATA)).status_code == 409


def test_too_many_open_uploads_is_429(uploader, settings) -> None:
    settings.ATELIER_UPLOAD_MAX_OPEN_PER_USER = 2
    alice = uploader("alice")
    assert [alice.start(f"f{n}.bin", DATA).status_code for n in range(3)] == [201, 201, 429]


def test_stale_sessions_expire_with_their_parts(uploader, settings) -> None:
    alice = uploader("alice")
    upload_id = alice.start("a.bin", DATA).json()["id"]
    alice.put(upload_id, DATA[:CHUNK], 0, len(DATA))
    assert uploads_expire() == 0
    later = timezone.now() + dt.timedelta(hours=settings.ATELIER_UPLOAD_EXPIRY_HOURS + 1)
    assert uploads_expire(now=later) == 1
    assert staged() == [] and alice.get(upload_id).json()["state"] == "aborted"
    # and a new upload runs the same cleanup: an old session does not hold its space
    FileUpload.objects.filter(public_id=upload_id).update(state="open")
    FileUpload.objects.filter(public_id=upload_id).update(updated_at=timezone.now() - dt.timedelta(days=2))
    alice.start("b.bin", DATA)
    assert FileUpload.objects.get(public_id=upload_id).state == "aborted"


# --- storage quotas --------------------------------------------------------------------------------

def _plan(personas, **limits) -> None:
    plan = Plan.objects.create(slug="small", name="Small", limits=limits)
    TenantPlan.objects.create(tenant=personas["alice"].membership.tenant, plan=plan,
                              effective_from=timezone.now() - dt.timedelta(days=1))


def test_the_storage_keys_are_limits_a_team_admin_may_set() -> None:
    assert "user_storage_bytes" in MEMBER_KEYS and "tenant_storage_bytes" not in MEMBER_KEYS
    assert Limits.from_json({"user_storage_bytes": 20 * 1024**3}).get("user_storage_bytes") == 20 * 1024**3


def test_a_member_over_her_storage_limit_is_refused_before_anything_is_stored(uploader, personas) -> None:
    alice = uploader("alice")
    assert alice.upload("old.bin", DATA, CHUNK).json()["state"] == "complete"
    open_id = alice.start("pending.bin", DATA).json()["id"]  # declared, not sent: counts in full
    Membership.objects.filter(user=personas["alice"]).update(limits={"user_storage_bytes": 3 * len(DATA)})
    usage = storage_usage(personas["alice"])
    assert (usage.used_bytes, usage.limit_bytes) == (2 * len(DATA), 3 * len(DATA))
    refused = alice.start("new.bin", DATA + b"!")
    assert refused.status_code == 413, refused.content
    body = refused.json()
    assert (body["limit"], body["used_bytes"], body["limit_bytes"]) == ("user_storage_bytes", 2 * len(DATA), 3 * len(DATA))
    assert "storage limit" in body["error"] and body["field"] == "size"
    assert FileUpload.objects.count() == 2 and len(staged()) == 1
    assert alice.start("fits.bin", DATA).status_code == 201  # exactly up to the limit
    alice.delete(open_id)


def test_the_team_limit_counts_every_members_home_and_the_team_folder(uploader, personas) -> None:
    _plan(personas, tenant_storage_bytes=3 * len(DATA))
    assert uploader("bob").upload("bobs.bin", DATA, CHUNK).json()["state"] == "complete"
    assert uploader("alice").upload("models/Lora/team.safetensors", DATA, CHUNK, area="team").json()["state"] == "complete"
    refused = uploader("alice").start("more.bin", DATA + b"!")
    assert refused.status_code == 413 and refused.json()["limit"] == "tenant_storage_bytes"
    usage = storage_usage(personas["bob"])
    assert (usage.used_bytes, usage.tenant_used_bytes, usage.tenant_limit_bytes) == (
        len(DATA), 2 * len(DATA), 3 * len(DATA))
    # charlie's team is on no plan: nothing limits him
    assert uploader("charlie").upload("c.bin", DATA * 4, CHUNK).json()["state"] == "complete"


# --- a checkpoint uploaded is listed and used at once, and charlie never sees it ---------------------

def test_an_uploaded_checkpoint_is_alices_at_once_and_invisible_to_charlie(
    uploader, api, tiny_checkpoint_path, settings
) -> None:
    settings.ATELIER_UPLOAD_CHUNK_BYTES = 1024 * 1024
    data = tiny_checkpoint_path.read_bytes()
    done = uploader("alice").upload("models/Stable-diffusion/alices-own.safetensors", data, 1024 * 1024)
    assert done.json()["state"] == "complete", done.content
    titles = [model["model_name"] for model in api("alice").get("/sdapi/v1/sd-models").json()]
    assert "alices-own" in titles
    assert "alices-own" not in [m["model_name"] for m in api("charlie").get("/sdapi/v1/sd-models").json()]
    job = {"prompt": "a lamp", "steps": 2, "width": 64, "height": 64,
           "override_settings": {"sd_model_checkpoint": "alices-own"}}
    submitted = api("alice").post("/api/v1/jobs", job)
    assert submitted.status_code == 201, submitted.content
    detail = api("alice").get(f"/api/v1/jobs/{submitted.json()['id']}").json()
    assert detail["checkpoint"].startswith("alices-own.safetensors")
    refused = api("charlie").post("/api/v1/jobs", job)
    assert refused.status_code == 404 and "alices-own" in json.loads(refused.content)["error"]


@pytest.mark.django_db(transaction=True)
def test_two_chunks_of_one_session_sent_at_once_never_interleave(personas, tokens) -> None:
    """The same chunk sent twice at once (a client retrying while the first is still in flight):
    one is written, the other is told where the upload stands; the part holds the chunk once."""
    import threading

    from django.db import connections
    from django.test import Client

    upload_id = Uploader(Client(), tokens["alice"]).start("race.bin", DATA).json()["id"]
    answers: list = []

    def send() -> None:
        try:
            answers.append(Uploader(Client(), tokens["alice"]).put(upload_id, DATA[:CHUNK], 0, len(DATA)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200, 409]
    assert [answer.json()["offset"] for answer in answers if answer.status_code == 409] == [CHUNK]
    assert staged()[0].read_bytes() == DATA[:CHUNK]
    assert FileUpload.objects.get(public_id=upload_id).offset == CHUNK


@pytest.mark.django_db(transaction=True)
def test_two_starts_at_once_cannot_both_take_the_last_space(personas, tokens) -> None:
    """Each upload fits the limit alone, not both: the tenant's row lock checks them one after the other."""
    import threading

    from django.db import connections
    from django.test import Client

    Membership.objects.filter(user=personas["alice"]).update(limits={"user_storage_bytes": len(DATA) * 3 // 2})
    answers: list = []

    def start(name: str) -> None:
        try:
            answers.append(Uploader(Client(), tokens["alice"]).start(name, DATA).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start, args=(f"f{n}.bin",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201, 413]
    assert FileUpload.objects.count() == 1


def test_a_model_folder_takes_only_real_safetensors_and_no_pickles(uploader) -> None:
    """The one model-file gate (inference/model_files.py) on uploads: a pickle's name is refused
    before any byte; a file claiming to be .safetensors that is not is refused at its last byte,
    and nothing is placed. Outside the model folders any file is fine."""
    alice = uploader("alice")
    pickle = alice.start("models/Lora/style.ckpt", DATA)
    assert pickle.status_code == 400 and ".safetensors" in pickle.json()["error"]
    fake = b"not a model at all" * 100
    refused = alice.upload("models/Lora/fake.safetensors", fake, CHUNK)
    assert refused.status_code == 422 and "not a valid safetensors file" in refused.json()["error"]
    assert not (home("alice") / "models" / "Lora" / "fake.safetensors").exists()
    assert alice.upload("notes/fake.safetensors", fake, CHUNK).json()["state"] == "complete"
