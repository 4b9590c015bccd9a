"""Runs of Tollgate's asynchronous processes, kept in our own tables: django-q2 keeps only a short
task history, and the Process Console needs status, progress, ETA and activities for every run."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ProcessKind(models.TextChoices):
    MEDIATION = "mediation", "Mediation File Processing"
    MAIN_BILLING = "main_billing", "Main Billing Processing"
    METERING = "metering", "Metering stream execution"
    REPROCESS = "reprocess", "Reprocess"
    REBALANCE = "rebalance", "Rebalance"


class RunStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    QUEUED = "queued", "Queued"
    WAITING = "waiting", "Waiting"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = [RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RUNNING]
FINAL_STATUSES = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]


def records_per_second(records, seconds) -> int | None:
    """The one definition of records/second on every page and in the API: records done over the
    wall-clock seconds from start to finish (to now while running), rounded to a whole number."""
    if not seconds or not records:
        return None
    return round(records / seconds)


class Timed:
    """Seconds from start to end (to now while it runs)."""

    @property
    def seconds(self):
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return max((end - self.started_at).total_seconds(), 0.0)


class ProcessRun(Timed, models.Model):
    """One run of a process for one subject (a file, a billing cycle, a stream, an account...).

    At most one run per kind and subject is active at a time (a partial unique constraint), so a
    process never runs twice at once for the same subject. `queue` groups runs that are worked
    strictly one after another (a collector's files), for the queue's ETA.
    """

    kind = models.CharField(max_length=16, choices=ProcessKind.choices)
    subject = models.CharField(max_length=64, help_text="What the run works on, e.g. file:12 or cycle:2026-11-01.")
    label = models.CharField(max_length=200)
    queue = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    waiting_for = models.CharField(max_length=200, blank=True, default="")
    step = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="What a running run is doing now (e.g. its batch and lines), written outside the batch's "
        "transaction so the console sees it before the batch commits.",
    )
    params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    records_expected = models.BigIntegerField(null=True, blank=True, help_text="Records the run is expected to do.")
    records_done = models.BigIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_label = models.CharField(max_length=150, blank=True, default="")
    worker = models.CharField(max_length=100, blank=True, default="")
    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="A running or waiting run not renewed by then lost its worker."
    )
    retry_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=Q(status__in=["scheduled", "queued", "waiting", "running"]),
                name="console_run_one_active_per_subject",
                violation_error_message="This process is already scheduled, queued or running for that subject.",
            ),
            models.CheckConstraint(condition=Q(records_done__gte=0), name="console_run_records_not_negative"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(status__in=["completed", "failed", "cancelled"]),
                name="console_run_finished_is_final",
            ),
        ]
        indexes = [
            models.Index(fields=["kind", "status"], name="console_run_kind_status_idx"),
            models.Index(fields=["kind", "-created_at"], name="console_run_kind_recent_idx"),
            models.Index(fields=["kind", "subject"], name="console_run_kind_subject_idx"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}: {self.label}"

    @property
    def is_active(self):
        return self.status in ACTIVE_STATUSES

    @property
    def can_cancel(self):
        return self.kind != ProcessKind.MEDIATION and self.status in (
            RunStatus.SCHEDULED,
            RunStatus.QUEUED,
            RunStatus.WAITING,
        )

    @property
    def records_per_second(self):
        return records_per_second(self.records_done, self.seconds)

    @property
    def progress_percent(self):
        if not self.records_expected:
            return None
        return min(100, round(100 * self.records_done / self.records_expected))


class ProcessActivity(Timed, models.Model):
    """A step of a run (Main Billing's Reprocess, Mapping, ...), with its own status and counts."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(ProcessRun, on_delete=models.CASCADE, related_name="activities")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=64)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    records = models.BigIntegerField(default=0)
    detail = models.CharField(max_length=500, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["run", "position"]
        verbose_name_plural = "process activities"
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="console_activity_position_unique"),
        ]

    def __str__(self):
        return f"{self.name} ({self.status})"
