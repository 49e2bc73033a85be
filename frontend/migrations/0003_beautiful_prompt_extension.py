"""Install the BeautifulPrompt extension for everyone, off by default (as prompt-styles was)."""

from django.db import migrations


def install_beautiful_prompt(apps, schema_editor):
    Extension = apps.get_model("frontend", "Extension")
    Extension.objects.get_or_create(
        name="beautiful-prompt",
        defaults={
            "title": "BeautifulPrompt",
            "description": "Adds a tab that expands a short prompt into detailed ones with a prompt-generation "
            "model (PAI's BeautifulPrompt), with buttons that send a result to txt2img or img2img.",
            "enabled_by_default": False,
        },
    )


class Migration(migrations.Migration):

    dependencies = [
        ("frontend", "0002_workspace_preferences_extensions"),
    ]

    operations = [
        migrations.RunPython(install_beautiful_prompt, migrations.RunPython.noop),
    ]
