"""Usage metering (seed 003): meter types with reset schedules, streams whose meter processor
guides mediated usage records into meters, and the readings meters flush to the next processor.

A meter counts within its current period, which starts when the meter is created or reset
(processing time, as in the seed): a stream that is not executed updates, resets and flushes
nothing. docs/metering.md gives the execution semantics.
"""

import zoneinfo

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

# Record fields a guiding rule may test, aggregate or key on (column of usage_usagerecord).
RECORD_FIELDS = {
    "category": "text",
    "usage_type": "text",
    "destination": "text",
    "identifier": "text",
    "record_id": "text",
    "service_id": "number",
    "account_id": "number",
    "collector_id": "number",
    "period_id": "number",
    "duration": "number",
    "volume": "number",
    "quantity": "number",
    "rated_quantity": "number",
    "included_quantity": "number",
    "charge_micros": "number",
    "tax_micros": "number",
}
FIELD_CHOICES = [(name, name) for name in RECORD_FIELDS]


def validate_time_zone(value):
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"Unknown time zone {value!r}.") from exc


def validate_cron(value):
    from croniter import croniter

    if value and not croniter.is_valid(value):
        raise ValidationError(f"{value!r} is not a cron expression (minute hour day month weekday).")


class MeterType(models.Model):
    """What a meter measures and when it starts over."""

    class Aggregation(models.TextChoices):
        SUM = "sum", "Sum of a field"
        COUNT = "count", "Count of records"
        MAX = "max", "Maximum of a field"
        UNIQUE = "unique", "Unique count of a field"
        LATEST = "latest", "Latest value of a field"

    class Reset(models.TextChoices):
        HOURLY = "hourly", "Hourly"
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly (from Monday)"
        MONTHLY = "monthly", "Monthly"
        CRON = "cron", "Cron expression"

    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    unit = models.CharField(max_length=32, blank=True, default="", help_text="Shown with values, e.g. bytes, calls.")
    aggregation = models.CharField(max_length=8, choices=Aggregation.choices)
    field = models.CharField(
        max_length=32, choices=FIELD_CHOICES, blank=True, default="", help_text="The record field (not for count)."
    )
    reset = models.CharField(max_length=8, choices=Reset.choices, default=Reset.DAILY)
    cron = models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[validate_cron],
        help_text="For reset by cron, e.g. 0 6 * * *",
    )
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="metering_metertype_code_unique"),
            models.CheckConstraint(
                condition=Q(aggregation="count") | ~Q(field=""),
                name="metering_metertype_field_needed",
                violation_error_message="Sum, maximum, unique count and latest need a field.",
            ),
            models.CheckConstraint(
                condition=~Q(reset="cron") | ~Q(cron=""),
                name="metering_metertype_cron_needed",
                violation_error_message="A cron reset needs a cron expression.",
            ),
        ]

    def __str__(self):
        return f"{self.code} {self.name}"

    def clean(self):
        if self.aggregation in ("sum", "max") and self.field and RECORD_FIELDS.get(self.field) != "number":
            raise ValidationError({"field": "Sum and maximum need a numeric field."})


class Stream(models.Model):
    """A stream with a meter processor: its guiding rules route records to meters."""

    class Mode(models.TextChoices):
        BATCH = "batch", "Batch"
        REALTIME = "realtime", "Real-time"

    class Flush(models.TextChoices):
        PERIOD_END = "period_end", "By period end"
        EXECUTION = "execution", "By stream execution"

    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.BATCH)
    flush = models.CharField(max_length=12, choices=Flush.choices, default=Flush.PERIOD_END)
    every_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1)],
        help_text="How often a batch stream runs (a real-time stream scans every minute).",
    )
    is_active = models.BooleanField(default=True, help_text="Inactive streams are not scheduled.")
    emit_collector = models.ForeignKey(
        "usage.UsageCollector",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Next processor: also send flushed values as usage records to this collector (rated like any "
        "file). The meter key must be the identifier.",
    )
    emit_usage_type = models.CharField(max_length=32, blank=True, default="")
    watermark = models.BigIntegerField(default=0, help_text="The last usage record id this stream has processed.")

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="metering_stream_code_unique"),
            models.CheckConstraint(
                condition=~Q(mode="realtime", flush="execution"),
                name="metering_stream_realtime_flushes_by_period_end",
                violation_error_message="A real-time stream can only flush by period end.",
            ),
        ]

    def __str__(self):
        return f"{self.code} {self.name}"

    @property
    def schedule_name(self) -> str:
        return f"metering-stream-{self.pk}"

    def clean(self):
        if self.mode == self.Mode.REALTIME and self.flush == self.Flush.EXECUTION:
            raise ValidationError({"flush": "A real-time stream can only flush by period end."})
        if self.emit_collector_id and not self.emit_usage_type:
            raise ValidationError({"emit_usage_type": "Say which usage type the emitted records have."})


class GuidingRule(models.Model):
    """Records meeting every condition add to the meter of `meter_type` with the rule's key."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveSmallIntegerField(default=1)
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text='A list of [field, operator, value]; operators = != > >= < <= in prefix. E.g. [["category", "=", '
        '"data"]]. Empty: every record.',
    )
    meter_type = models.ForeignKey(MeterType, on_delete=models.PROTECT, related_name="rules")
    key_fields = models.CharField(
        max_length=200, default="service_id", help_text="Comma-separated record fields that make the meter key."
    )

    class Meta:
        ordering = ["stream", "position", "id"]

    def __str__(self):
        return f"{self.stream.code} #{self.position} → {self.meter_type.code} by {self.key_fields}"

    def clean(self):
        from .guiding import RuleError, rule_sql

        try:
            rule_sql(self)
        except RuleError as exc:
            raise ValidationError(str(exc)) from exc


class Meter(models.Model):
    """One meter per stream, meter type and key: its current period and value."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="meters")
    meter_type = models.ForeignKey(MeterType, on_delete=models.PROTECT, related_name="meters")
    key = models.CharField(max_length=200)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    value = models.DecimalField(max_digits=30, decimal_places=6, default=0)
    latest_at = models.DateTimeField(null=True, blank=True, help_text="Usage time of the latest value (latest).")
    records = models.BigIntegerField(default=0, help_text="Records counted in this period.")
    updated_at = models.DateTimeField(null=True, blank=True)
    last_flush_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "meter_type", "key"], name="metering_meter_once"),
            models.CheckConstraint(condition=Q(period_end__gt=models.F("period_start")), name="metering_meter_period"),
        ]
        indexes = [models.Index(fields=["stream", "period_end"], name="metering_meter_due_idx")]

    def __str__(self):
        return f"{self.meter_type.code}[{self.key}]"


class MeterValue(models.Model):
    """The distinct values a unique-count meter has seen in its period."""

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="+", db_index=False)
    value = models.CharField(max_length=200)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["meter", "value"], name="metering_metervalue_once")]

    def __str__(self):
        return self.value


class StreamExecution(models.Model):
    """One run of a stream: Tollgate's own history (django-q2 keeps only a short task history)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="executions")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=32, default="schedule")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    from_record = models.BigIntegerField(default=0)
    to_record = models.BigIntegerField(default=0)
    records = models.BigIntegerField(default=0, help_text="Input records processed.")
    meter_updates = models.BigIntegerField(default=0)
    flushed = models.BigIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"{self.stream.code} {self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"

    @property
    def seconds(self):
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def records_per_second(self):
        from console.models import records_per_second

        return records_per_second(self.records, self.seconds)


class MeterReading(models.Model):
    """A flushed meter value: what the next processor received."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="readings")
    meter_type = models.ForeignKey(MeterType, on_delete=models.PROTECT, related_name="readings")
    key = models.CharField(max_length=200)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    value = models.DecimalField(max_digits=30, decimal_places=6)
    records = models.BigIntegerField(default=0)
    flushed_at = models.DateTimeField()
    execution = models.ForeignKey(StreamExecution, on_delete=models.CASCADE, related_name="readings")

    class Meta:
        ordering = ["-flushed_at", "meter_type", "key"]
        indexes = [models.Index(fields=["stream", "meter_type", "key"], name="metering_reading_meter_idx")]

    def __str__(self):
        return f"{self.meter_type.code}[{self.key}] {self.period_start:%Y-%m-%d %H:%M} = {self.value}"
