"""The Django admin site of the platform: Django's, with actions that refuse bad selections.

Django's changelist answers an action posted with a selection that is not an id (say
`_selected_action=""`, as the property-based form tests post) with a 500: it filters
`pk__in` with the raw values. Every ModelAdmin registered here, Django's own `User` and
`Group` included, checks the selection first and says what to do instead.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse


class CheckedSelectionMixin:
    """`response_action` that refuses selected values which are not ids of the model."""

    def response_action(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        pk = self.model._meta.pk  # type: ignore[attr-defined]
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                pk.to_python(value)
        except ValidationError:
            self.message_user(  # type: ignore[attr-defined]
                request, "The selection is not a list of ids: tick the rows to act on, then run the action.",
                messages.WARNING,
            )
            return None  # the changelist then redirects back to itself
        return super().response_action(request, queryset)  # type: ignore[misc]


class AtelierAdminSite(admin.AdminSite):
    site_header = "Atelier administration"
    site_title = "Atelier"

    def register(self, model_or_iterable: Any, admin_class: type[admin.ModelAdmin] | None = None, **options: Any) -> None:
        base = admin_class or admin.ModelAdmin
        checked = type(base.__name__, (CheckedSelectionMixin, base), {"__module__": base.__module__})
        super().register(model_or_iterable, checked, **options)


class AtelierAdminConfig(AdminConfig):
    default_site = "config.admin_site.AtelierAdminSite"
