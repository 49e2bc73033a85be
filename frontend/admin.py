"""Django admin for the frontend app."""

from django.contrib import admin

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
