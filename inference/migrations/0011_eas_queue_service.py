"""Issue 15: the EAS async queue service (services, tokens, queue items, consumers)."""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import inference.eas.models


class Migration(migrations.Migration):

    dependencies = (
        ('inference', '0010_network_key_and_active_networks'),
        ('tenants', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    )

    operations = (
        migrations.CreateModel(
            name='EasService',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('public_id', models.CharField(default=inference.eas.models.new_service_id, editable=False, max_length=32, unique=True)),
                ('name', models.CharField(max_length=64, unique=True, validators=[django.core.validators.RegexValidator('^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$', "Use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.")])),
                ('default_checkpoint', models.CharField(blank=True, help_text="Used when a request names no sd_model_checkpoint; empty: the owner's.", max_length=500)),
                ('max_payload_bytes', models.PositiveIntegerField(default=8388608, help_text='A bigger put is refused with 413 (meta.maxPayloadBytes).')),
                ('max_queue_length', models.PositiveIntegerField(default=10000, help_text='Items a queue holds at most (stream.approxMaxLength).')),
                ('max_sink_uncommitted', models.PositiveIntegerField(default=1000, help_text='Back-pressure: input items wait while the sink holds this many results (plus those running).')),
                ('result_retention_hours', models.PositiveIntegerField(default=72, help_text='Uncommitted results older than this are dropped.')),
                ('input_last_index', models.BigIntegerField(default=0, editable=False)),
                ('sink_last_index', models.BigIntegerField(default=0, editable=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='eas_services', to=settings.AUTH_USER_MODEL)),
                ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='eas_services', to='tenants.tenant')),
            ],
            options={
                'ordering': ('name',),
            },
        ),
        migrations.CreateModel(
            name='EasServiceToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(default='default', max_length=100)),
                ('prefix', models.CharField(editable=False, help_text='First characters, to recognise a token.', max_length=16)),
                ('digest', models.CharField(editable=False, max_length=64, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tokens', to='inference.easservice')),
            ],
            options={
                'ordering': ('-created_at',),
            },
        ),
        migrations.CreateModel(
            name='EasItem',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('queue', models.CharField(choices=[('input', 'Input'), ('sink', 'Sink')], max_length=8)),
                ('index', models.BigIntegerField()),
                ('request_id', models.CharField(db_index=True, max_length=64)),
                ('route', models.CharField(blank=True, max_length=200)),
                ('tags', models.JSONField(blank=True, default=dict)),
                ('data', models.BinaryField()),
                ('priority', models.SmallIntegerField(default=0)),
                ('base_url', models.CharField(blank=True, help_text='Where the put came in: image URLs use it.', max_length=500)),
                ('status', models.CharField(blank=True, choices=[('waiting', 'Waiting'), ('submitted', 'Submitted'), ('done', 'Done')], max_length=16)),
                ('consumer', models.CharField(blank=True, help_text='"<group>.<consumer>"; "" = undelivered.', max_length=200)),
                ('delivered_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('job', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='eas_items', to='inference.job')),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='items', to='inference.easservice')),
            ],
            options={
                'ordering': ('service', 'queue', 'index'),
                'indexes': [models.Index(fields=['service', 'queue', 'consumer', 'index'], name='inference_e_service_e74973_idx'), models.Index(fields=['service', 'queue', 'status', 'index'], name='inference_e_service_561297_idx')],
                'constraints': [models.UniqueConstraint(fields=('service', 'queue', 'index'), name='eas_item_unique_index')],
            },
        ),
        migrations.CreateModel(
            name='EasConsumer',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('queue', models.CharField(choices=[('input', 'Input'), ('sink', 'Sink')], max_length=8)),
                ('name', models.CharField(max_length=200)),
                ('window', models.PositiveIntegerField(default=1)),
                ('auto_commit', models.BooleanField(default=False)),
                ('status', models.CharField(choices=[('Running', 'Running'), ('Exit', 'Exit')], default='Running', max_length=16)),
                ('last_seen', models.DateTimeField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='consumers', to='inference.easservice')),
            ],
            options={
                'ordering': ('service', 'queue', 'name'),
                'constraints': [models.UniqueConstraint(fields=('service', 'queue', 'name'), name='eas_consumer_unique_name')],
            },
        ),
    )
