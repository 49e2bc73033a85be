from django.urls import path

from inference.api import job_groups
from inference.api import native as api
from inference.api import promptgen
from inference.api import usage as usage_api

urlpatterns = [
    path("jobs", api.jobs, name="api-jobs"),
    path("jobs/<str:public_id>", api.job_detail, name="api-job"),
    path("jobs/<str:public_id>/cancel", api.job_cancel_view, name="api-job-cancel"),
    path("jobs/<str:public_id>/images/<int:index>", api.job_image, name="api-job-image"),
    path("jobs/<str:public_id>/control-maps/<int:index>", api.job_control_map, name="api-job-control-map"),
    path("job-groups", job_groups.job_groups, name="api-job-groups"),
    path("job-groups/<str:group_id>", job_groups.job_group_detail, name="api-job-group"),
    path("job-groups/<str:group_id>/cancel", job_groups.job_group_cancel_view, name="api-job-group-cancel"),
    path("job-groups/<str:group_id>/grid", job_groups.job_group_grid, name="api-job-group-grid"),
    path("models", api.models, name="api-models"),
    path("promptgen", promptgen.promptgen, name="api-promptgen"),
    path("promptgen/models", promptgen.promptgen_models, name="api-promptgen-models"),
    path("usage", api.usage, name="api-usage"),
    path("usage/records", usage_api.usage_records_view, name="api-usage-records"),
    path("usage/statement", usage_api.usage_statement_view, name="api-usage-statement"),
    path("workers", api.workers, name="api-workers"),
]
