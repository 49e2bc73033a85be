"""Django admin for the frontend app."""

from django.contrib import admin

from frontend.models import WorkspaceSession
from frontend.preferences import Extension, ExtensionChoice, WorkspacePreferences


# --- workspace: extensions and member preferences --------------------------------------
class ExtensionChoiceInline(admin.TabularInline):
    model = ExtensionChoice
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["updated_at"]


@admin.register(Extension)
class ExtensionAdmin(admin.ModelAdmin):
    """Extensions installed for the whole platform. `name` selects shipped code
    (frontend/workspace/extensions.py); members switch each on or off for themselves."""

    list_display = ["name", "title", "enabled_by_default", "members_on", "created_at"]
    list_editable = ["enabled_by_default"]
    search_fields = ["name", "title"]
    inlines = [ExtensionChoiceInline]

    @admin.display(description="members who switched it on")
    def members_on(self, extension: Extension) -> int:
        return extension.choices.filter(enabled=True).count()


@admin.register(WorkspacePreferences)
class WorkspacePreferencesAdmin(admin.ModelAdmin):
    list_display = ["user", "language", "updated_at"]
    list_filter = ["language"]
    search_fields = ["user__username"]
    raw_id_fields = ["user"]


# --- workspace sessions: read-only, the session manager owns them -----------------------
@admin.register(WorkspaceSession)
class WorkspaceSessionAdmin(admin.ModelAdmin):
    """Each member's Gradio workspace process, as the web process's session manager last saw it."""

    list_display = ["user", "status", "pid", "port", "started_at", "ready_at", "last_seen_at", "restarts", "stop_reason"]
    list_filter = ["status"]
    search_fields = ["user__username"]
    ordering = ["-last_seen_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
