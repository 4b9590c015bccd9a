"""Reschedule a stream whenever it is saved or deleted, from the admin, the API or code."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Stream


@receiver(post_save, sender=Stream)
def reschedule(sender, instance, raw=False, **kwargs):
    if raw:
        return
    from .services import sync_schedule

    sync_schedule(instance)


@receiver(post_delete, sender=Stream)
def unschedule(sender, instance, **kwargs):
    from django_q.models import Schedule

    Schedule.objects.filter(name=instance.schedule_name).delete()
