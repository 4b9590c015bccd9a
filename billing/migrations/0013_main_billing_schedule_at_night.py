"""The daily Main Billing schedule runs at 02:00 in the billing time zone.

It was created due at the moment of migrating, so a new installation billed ended cycles the
instant its first worker started. An overdue schedule is moved to the next 02:00 instead (at most
a day later than it would have run); one already due in the future is left alone.
"""

import datetime as dt

from django.db import migrations
from django.utils import timezone

NAME = "Main Billing: cycles that ended"


def next_night(now):
    local = timezone.localtime(now)
    night = local.replace(hour=2, minute=0, second=0, microsecond=0)
    return night if night > local else night + dt.timedelta(days=1)


def forward(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    now = timezone.now()
    for schedule in Schedule.objects.filter(name=NAME):
        if schedule.next_run is None or schedule.next_run <= now:
            schedule.next_run = next_night(now)
            schedule.save(update_fields=["next_run"])


class Migration(migrations.Migration):
    dependencies = [("billing", "0012_prefix_search_indexes"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
