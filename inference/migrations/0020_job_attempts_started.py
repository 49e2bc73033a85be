"""Split a job's attempt number (the dispatch token) from the count of attempts a worker started."""

from django.db import migrations, models


def count_started_attempts(apps, schema_editor) -> None:
    # Before this, every dispatch counted as an attempt: a job that ever started is taken to have
    # started each of its dispatches (the upper bound the old cap used), one never started none.
    Job = apps.get_model("inference", "Job")
    Job.objects.filter(started_at__isnull=False).update(attempts_started=models.F("attempts"))


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0019_model_blob"),
    ]

    operations = [
        migrations.AlterField(
            model_name="job",
            name="attempts",
            field=models.PositiveIntegerField(
                default=0, help_text="The number of this job's latest dispatch (unique: never lowered or reused)."
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="attempts_started",
            field=models.PositiveSmallIntegerField(
                default=0, help_text="Attempts a worker really started (claimed); the attempt cap counts these."
            ),
        ),
        migrations.RunPython(count_started_attempts, migrations.RunPython.noop),
    ]
