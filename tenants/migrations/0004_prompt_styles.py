"""Prompt styles as data: public, team and member styles; the styles the workspace shipped built in
(frontend/workspace/extensions.py's list until now) become public styles (issue 20)."""

import django.db.models.deletion
import tenants.models
from django.conf import settings
from django.db import migrations, models

# The built-in list as it was shipped; written here so that the migration never changes with the code.
BUILTIN_STYLES = (
    ("Cinematic", "{prompt}, cinematic lighting, film grain, shallow depth of field", "cartoon, flat colours"),
    ("Watercolor", "watercolor painting of {prompt}, soft edges, paper texture", "photo, 3d render"),
    ("Line art", "clean line art of {prompt}, black ink on white, minimal", "colour, shading"),
    ("Product shot", "{prompt}, studio product photography, white background, softbox", "clutter, text"),
    ("Quality tags", "masterpiece, best quality", "lowres, blurry, jpeg artifacts"),
)


def seed_public_styles(apps, schema_editor):
    PromptStyle = apps.get_model("tenants", "PromptStyle")
    for name, prompt, negative_prompt in BUILTIN_STYLES:
        PromptStyle.objects.get_or_create(
            scope="public", name=name, defaults={"prompt": prompt, "negative_prompt": negative_prompt},
        )


def remove_public_styles(apps, schema_editor):
    PromptStyle = apps.get_model("tenants", "PromptStyle")
    PromptStyle.objects.filter(scope="public", name__in=[name for name, _p, _n in BUILTIN_STYLES]).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0003_tenant_hidden_workspace_tabs'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PromptStyle',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('public_id', models.CharField(default=tenants.models.new_public_id, editable=False, max_length=32, unique=True)),
                ('name', models.CharField(max_length=100)),
                ('prompt', models.TextField(blank=True, help_text="`{prompt}` marks where the member's prompt goes; without it the style is appended after ', '.", max_length=10000)),
                ('negative_prompt', models.TextField(blank=True, max_length=10000)),
                ('scope', models.CharField(choices=[('public', 'Public'), ('tenant', 'Team'), ('user', "Member's own")], default='public', max_length=16)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('owner', models.ForeignKey(blank=True, help_text="For a member's own style only.", null=True, on_delete=django.db.models.deletion.CASCADE, related_name='prompt_styles', to=settings.AUTH_USER_MODEL)),
                ('tenant', models.ForeignKey(blank=True, help_text='For a team style only.', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='prompt_styles', to='tenants.tenant')),
            ],
            options={
                'ordering': ['scope', 'name'],
                'constraints': [models.CheckConstraint(condition=models.Q(models.Q(('owner__isnull', True), ('scope', 'public'), ('tenant__isnull', True)), models.Q(('owner__isnull', True), ('scope', 'tenant'), ('tenant__isnull', False)), models.Q(('owner__isnull', False), ('scope', 'user'), ('tenant__isnull', True)), _connector='OR'), name='prompt_style_scope_matches_its_owner'), models.UniqueConstraint(condition=models.Q(('scope', 'public')), fields=('name',), name='prompt_style_public_name'), models.UniqueConstraint(condition=models.Q(('scope', 'tenant')), fields=('tenant', 'name'), name='prompt_style_tenant_name'), models.UniqueConstraint(condition=models.Q(('scope', 'user')), fields=('owner', 'name'), name='prompt_style_owner_name')],
            },
        ),
        migrations.RunPython(seed_public_styles, remove_public_styles),
    ]
