"""Home page: the member's recent jobs and how to use the API."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from inference.model_registry import model_list_for_user
from inference.selectors import job_list_for_user
from tenants.selectors import membership_for_user, usage_this_month


@login_required
def home(request: HttpRequest) -> HttpResponse:
    membership = membership_for_user(request.user)
    usage = usage_this_month(request.user)
    return render(
        request,
        "frontend/home.html",
        {
            "membership": membership,
            "jobs": job_list_for_user(request.user, limit=20),
            "checkpoints": model_list_for_user(request.user) if membership else [],
            "usage_gpu_seconds": sum(record.gpu_seconds for record in usage),
            "usage_images": sum(record.images for record in usage),
        },
    )
