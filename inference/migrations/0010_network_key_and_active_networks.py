"""Job.lora_key holds hypernetworks and embeddings too: renamed to network_key (data kept).
Workers report the network set they hold (Worker.active_networks), for the scheduler's affinity."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("inference", "0009_job_kind_extras")]

    operations = [
        migrations.RenameField(model_name="job", old_name="lora_key", new_name="network_key"),
        migrations.AddField(
            model_name="worker",
            name="active_networks",
            field=models.CharField(blank=True, default="", max_length=500),
        ),
    ]
