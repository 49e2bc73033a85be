"""Usage records are append-only in Django admin: nobody, not even a superuser, adds, changes or
deletes one there (a correction is a new adjusting record); operators see them read-only."""

from __future__ import annotations

import pytest

from inference.models import Job
from tenants.models import UsageRecord
from tenants.services import usage_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def record(api, tiny_checkpoint_path) -> UsageRecord:
    response = api("alice").post("/api/v1/jobs", {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64})
    assert response.status_code == 201, response.content
    job = Job.objects.get(public_id=response.json()["id"])
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, gpu_seconds=1.5, outputs=["a.png"])
    job.refresh_from_db()
    usage_record(job=job)
    return UsageRecord.objects.get(job=job)


def test_a_superuser_sees_usage_records_read_only_and_cannot_delete_or_change_them(client, personas, record) -> None:
    operator = personas["admin"]
    assert operator.is_superuser
    client.force_login(operator)
    base = "/admin/tenants/usagerecord"

    listing = client.get(f"{base}/")
    assert listing.status_code == 200 and record.job.public_id in listing.content.decode()
    assert 'value="delete_selected"' not in listing.content.decode()  # no bulk delete action
    detail = client.get(f"{base}/{record.pk}/change/")
    assert detail.status_code == 200  # the view permission: a read-only page
    page = detail.content.decode()
    assert 'name="_save"' not in page and f"{base}/{record.pk}/delete/" not in page

    assert client.get(f"{base}/{record.pk}/delete/").status_code == 403
    assert client.post(f"{base}/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"{base}/", {"action": "delete_selected", "_selected_action": [record.pk],
                                    "post": "yes"}).status_code in (200, 302)  # an unknown action: nothing done
    assert client.post(f"{base}/{record.pk}/change/", {"gpu_seconds": "0", "images": "0",
                                                       "status": "failed"}).status_code == 403
    assert client.get(f"{base}/add/").status_code == 403

    record.refresh_from_db()
    assert (record.gpu_seconds, record.images, record.status) == (1.5, 1, Job.Status.SUCCEEDED)
    assert UsageRecord.objects.filter(pk=record.pk).exists()
