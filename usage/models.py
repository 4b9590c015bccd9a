"""Usage collectors, the mediation files they receive, and the usage records mediation writes.

Money on usage records is held in integer micro-units (1e-6 of the currency) so that PostgreSQL and
SQLite compute identical charges in SQL; the record's single rounding point is in `gates/rate.py`.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.models import (
    QUANTITY,
    TOTAL,
    Account,
    AggregateCharge,
    Category,
    Discount,
    IncludedValue,
    Rate,
    Service,
    SubscriptionPeriod,
)

MICROS = Decimal(1_000_000)


def micros_to_money(value):
    return None if value is None else Decimal(value) / MICROS


class UsageCollector(models.Model):
    """One source supplier's feed, with the mapping from its file format to a usage record."""

    class Format(models.TextChoices):
        CSV_HEADER = "csv_header", "CSV with header"
        CSV_POSITION = "csv_position", "CSV by position"
        FIXED_WIDTH = "fixed_width", "Fixed width"
        JSON_LINES = "json_lines", "JSON lines"

    class LatePolicy(models.TextChoices):
        QUARANTINE = "quarantine", "Quarantine as LATE_CLOSED_PERIOD"
        ROLL_FORWARD = "roll_forward", "Roll into the next open period (flagged late)"

    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    supplier = models.CharField(max_length=200, blank=True, default="")
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.CSV_HEADER)
    encoding = models.CharField(max_length=32, default="utf-8")
    delimiter = models.CharField(max_length=4, default=",", blank=True)
    field_mapping = models.JSONField(
        default=dict,
        help_text=(
            "Record field → source: a column name (CSV with header), a 1-based column number (CSV by position), "
            "[start, end] 1-based inclusive character positions (fixed width), or a key (JSON lines). "
            "Fields: record_id, identifier, start_time, duration, volume, quantity, destination, usage_type, amount; "
            "corrects / cancels: the key of an earlier record this line replaces / cancels (docs/rating.md)."
        ),
    )
    time_format = models.CharField(
        max_length=64, default="iso", help_text="'iso', 'epoch', or a strftime pattern such as %Y%m%d%H%M%S."
    )
    time_zone = models.CharField(max_length=64, default="UTC", help_text="Applied to times without an offset.")
    duration_unit = models.CharField(
        max_length=8, default="second", choices=[("second", "seconds"), ("ms", "milliseconds"), ("minute", "minutes")]
    )
    volume_unit = models.CharField(
        max_length=8,
        default="byte",
        choices=[
            ("byte", "bytes"),
            ("kb", "kB (1,000 bytes)"),
            ("mb", "MB (10^6 bytes)"),
            ("kib", "KiB (1,024 bytes)"),
            ("mib", "MiB (2^20 bytes)"),
        ],
    )
    category_rules = models.JSONField(
        default=dict, blank=True, help_text='Usage type → category, e.g. {"voice": "telephony", "data": "data"}.'
    )
    default_category = models.CharField(max_length=16, choices=Category.choices, default=Category.MISC)
    dedup_fields = models.JSONField(default=list, blank=True, help_text="Fields forming the record key.")
    late_usage_policy = models.CharField(max_length=16, choices=LatePolicy.choices, default=LatePolicy.QUARANTINE)
    multiline_fields = models.BooleanField(
        default=False,
        help_text="CSV: a quoted field may span lines. Off, each physical line is one record or one error, so an "
        "unbalanced quote costs one line, not the lines after it.",
    )
    accept_negative = models.BooleanField(
        "accept negative usage (credits)",
        default=False,
        help_text="A negative duration, volume or quantity is a carrier's refund or correction: priced as the "
        "negation of the same usage priced positively, drawing no allowance. Off: such a line is refused.",
    )
    fraction_rounding = models.CharField(
        max_length=8,
        default="exact",
        choices=[
            ("exact", "Keep it exactly, to the thousandth (milliseconds)"),
            ("up", "Round up to a whole second or byte (in size)"),
            ("nearest", "Round to the nearest whole second or byte (half up)"),
            ("refuse", "Refuse a fraction (a per-line error)"),
        ],
        help_text="How a duration, volume or quantity that is not a whole number of seconds, bytes or units is "
        "read, after its unit is applied exactly (1.5 MB is 1,500,000 bytes; 1,500 ms is 1.5 s). Exact keeps up to "
        "three decimals of a base unit; a finer value is a per-line error.",
    )
    # Plausibility bounds: a record beyond them is quarantined OUT_OF_RANGE, never rated. The
    # ceilings keep every value, and what rating makes of it, inside a 64-bit column.
    max_duration_seconds = models.BigIntegerField(
        default=31 * 86_400,
        validators=[MinValueValidator(1), MaxValueValidator(10**9)],
        help_text="Longest duration one record may have, in seconds (default 31 days).",
    )
    max_volume_bytes = models.BigIntegerField(
        default=10**13,
        validators=[MinValueValidator(1), MaxValueValidator(10**13)],
        help_text="Largest volume one record may have, in bytes (default and at most 10 TB).",
    )
    max_quantity = models.BigIntegerField(
        default=1_000_000,
        validators=[MinValueValidator(1), MaxValueValidator(10**12)],
        help_text="Largest quantity one record may have.",
    )
    max_amount = models.DecimalField(
        max_digits=16,
        decimal_places=6,
        default=Decimal("1000000"),
        validators=[MinValueValidator(Decimal("0.000001")), MaxValueValidator(Decimal("1000000000"))],
        help_text="Largest pre-priced amount (either sign) one record may have, in the currency.",
    )
    is_active = models.BooleanField(default=True)
    # The queue lease: the worker draining this collector's files, and until when.
    lease_owner = models.CharField(max_length=64, blank=True, default="", editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["code"], name="usage_collector_code_unique")]

    def __str__(self):
        return f"{self.code} {self.name}"

    def key_fields(self) -> list[str]:
        return list(self.dedup_fields or ["record_id"])

    def plausibility_bounds(self) -> dict:
        return {
            "duration": self.max_duration_seconds,
            "volume": self.max_volume_bytes,
            "quantity": self.max_quantity,
            "amount": Decimal(self.max_amount),
        }


def raw_file_path(instance, filename):
    return f"mediation/{instance.collector_id}/{timezone.now():%Y/%m/%d}/{instance.sha256[:16]}-{filename}"


class MediationFile(models.Model):
    """A file received by a collector: queued, then processed strictly in upload order."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        COMPLETED = "completed", "Completed"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped by an operator"

    collector = models.ForeignKey(UsageCollector, on_delete=models.PROTECT, related_name="files")
    sequence = models.PositiveIntegerField(help_text="Place in the collector's queue.")
    name = models.CharField(max_length=255)
    raw = models.FileField(upload_to=raw_file_path, max_length=400)
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    uploaded_via = models.CharField(max_length=64, default="admin")
    source_format = models.CharField(
        max_length=12,
        choices=[("collector", "The collector's format"), ("api", "API records (JSON lines, Tollgate field names)")],
        default="collector",
    )
    uploaded_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, default="", help_text="Why the whole file was rejected or failed.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    processing_seconds = models.FloatField(null=True, blank=True)
    # Progress marker: data lines whose outcome is committed. A restarted worker resumes after it.
    lines_done = models.BigIntegerField(default=0)
    # Outcome counts, refreshed after processing and after every reprocess.
    total_lines = models.BigIntegerField(default=0)
    mediated = models.BigIntegerField(default=0)
    quarantined = models.BigIntegerField(default=0)
    duplicates = models.BigIntegerField(default=0)
    rejected_lines = models.BigIntegerField(default=0)
    blank_lines = models.BigIntegerField(default=0)
    # Every physical line is accounted: physical = header + blank + continuation + total_lines.
    physical_lines = models.BigIntegerField(default=0)
    header_lines = models.BigIntegerField(default=0)
    continuation_lines = models.BigIntegerField(
        default=0, help_text="Lines that continue a record's quoted field (collectors with multi-line fields)."
    )
    pending = models.BigIntegerField(default=0)
    void = models.BigIntegerField(
        default=0, help_text="Records replaced or cancelled by a later correction, and the lines that cancel."
    )
    charge_micros = models.BigIntegerField(default=0)
    tax_micros = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["collector", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["collector", "sequence"], name="usage_file_queue_position_unique"),
            models.UniqueConstraint(fields=["collector", "sha256"], name="usage_file_content_unique"),
        ]
        indexes = [models.Index(fields=["status", "collector", "sequence"], name="usage_file_queue_idx")]

    def __str__(self):
        return f"{self.collector.code} #{self.sequence} {self.name}"

    @property
    def records_per_second(self):
        """Its Mediation File Processing run's figure (console.models.records_per_second), so the
        history, the file's page and the console agree; `processing_seconds` counts batches only."""
        run = getattr(self, "run", None)
        if run is None:
            from console.models import ProcessKind, ProcessRun

            run = (
                ProcessRun.objects.filter(kind=ProcessKind.MEDIATION, subject=f"file:{self.pk}").order_by("-pk").first()
            )
        return run.records_per_second if run is not None else None

    @property
    def charge(self):
        return micros_to_money(self.charge_micros)

    @property
    def tax(self):
        return micros_to_money(self.tax_micros)


class Reason(models.TextChoices):
    PARSE_ERROR = "PARSE_ERROR", "Could not be parsed"
    DUPLICATE = "DUPLICATE", "Duplicate record"
    OUT_OF_RANGE = "OUT_OF_RANGE", "Beyond the collector's plausibility bounds"
    NO_SERVICE = "NO_SERVICE", "No service with that identifier at that time"
    NO_PERIOD = "NO_PERIOD", "No subscription period for that time"
    LATE_CLOSED_PERIOD = "LATE_CLOSED_PERIOD", "Period is closed or invoiced"
    NO_RATE = "NO_RATE", "No price for that usage"
    NO_TAX = "NO_TAX", "No tax rule applies"
    CORRECTION_REFUSED = "CORRECTION_REFUSED", "Correction refused"
    SUPERSEDED = "SUPERSEDED", "Replaced or cancelled by a correction"
    CANCELLATION = "CANCELLATION", "A correction that cancels a record"


def reference(to, related_name="+", *, optional=True, on_delete=models.PROTECT, **options):
    """A record's reference: no database foreign key nor index (see RecordFields), deletion still
    refused."""
    if optional:
        options.update(null=True, blank=True)
    return models.ForeignKey(
        to, on_delete=on_delete, related_name=related_name, db_index=False, db_constraint=False, **options
    )


class RecordFields(models.Model):
    """One usage line: where it came from, what it is, and what each gate decided.

    `stage` is the gate the record waits at (or failed at); `status` says whether it is pending,
    mediated, quarantined or void (replaced or cancelled by a correction, or a cancellation itself:
    kept, never billed). A mediated record is kept in `UsageRecord`, any other in
    `QuarantinedRecord`; `FileRecord` reads both. Written by COPY and set-based SQL, so integrity
    rules are constraints. References carry no database foreign key: file and collector are
    constants of the statement that writes a batch, and the gates take service, account, period and
    rate from joins in that same statement, while per-row foreign-key triggers would double the cost
    of writing a record. Deleting a referenced row is still refused (PROTECT).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        MEDIATED = "mediated", "Mediated"
        QUARANTINED = "quarantined", "Quarantined"
        VOID = "void", "Void (corrected)"

    class Stage(models.TextChoices):
        PARSE = "parse", "parse"
        DEDUP = "dedup", "dedup"
        IDENTIFY = "identify", "identify"
        BUCKET = "bucket", "bucket"
        RATE = "rate", "rate"
        TAX = "tax", "tax"
        DONE = "done", "done"

    id = models.BigAutoField(primary_key=True)
    file = reference(MediationFile, optional=False)
    collector = reference(UsageCollector, optional=False)
    line_no = models.BigIntegerField()
    record_key = models.CharField(max_length=255, null=True, blank=True)
    is_duplicate = models.BooleanField(default=False)
    record_id = models.CharField(max_length=128, blank=True, default="")
    identifier = models.CharField(max_length=128, blank=True, default="")
    usage_at = models.DateTimeField(null=True, blank=True)
    usage_date = models.DateField(null=True, blank=True, help_text="The usage day in the billing time zone.")
    duration = models.DecimalField(**QUANTITY, null=True, blank=True, help_text="Seconds, exact to the millisecond.")
    volume = models.DecimalField(**QUANTITY, null=True, blank=True, help_text="Bytes.")
    quantity = models.DecimalField(**QUANTITY, null=True, blank=True)
    destination = models.CharField(max_length=64, blank=True, default="")
    usage_type = models.CharField(max_length=32, blank=True, default="")
    amount_micros = models.BigIntegerField(null=True, blank=True, help_text="Pre-priced amount, if the file has one.")
    category = models.CharField(max_length=16, choices=Category.choices, blank=True, default="")
    service = reference(Service)
    account = reference(Account)
    period = reference(SubscriptionPeriod)
    is_late = models.BooleanField(default=False)
    rate = reference(Rate)
    rated_quantity = models.DecimalField(
        **QUANTITY,
        null=True,
        blank=True,
        help_text="Base units after increments; for a record an aggregate charge covers, what it adds to the metric.",
    )
    included_quantity = models.DecimalField(
        **QUANTITY, null=True, blank=True, help_text="Base units of the rated quantity covered by allowances."
    )
    included_micros = models.BigIntegerField(
        null=True, blank=True, help_text="Micro-units of the charge covered by money allowances."
    )
    allowance = reference(IncludedValue, help_text="The first allowance the record drew from.")
    aggregate_charge = reference(
        AggregateCharge,
        help_text="Covered by this aggregate charge (the first, if several): not priced by itself, but by the "
        "period's aggregate at Main Billing.",
    )
    discount = reference(Discount)
    local_weekday = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="ISO weekday of the usage start in the billing time zone (time bands)."
    )
    local_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds since local midnight of the usage start (time bands)."
    )
    charge_micros = models.BigIntegerField(null=True, blank=True)
    tax_micros = models.BigIntegerField(null=True, blank=True)
    stage = models.CharField(max_length=8, choices=Stage.choices)
    status = models.CharField(max_length=12, choices=Status.choices)
    reason = models.CharField(max_length=24, choices=Reason.choices, blank=True, default="")
    message = models.CharField(max_length=500, blank=True, default="")
    raw = models.TextField(blank=True, default="", help_text="The source line, kept for records that failed to parse.")

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.record_id or '#' + str(self.line_no)} {self.usage_type} {self.status}"

    @property
    def charge(self):
        return micros_to_money(self.charge_micros)

    @property
    def tax(self):
        return micros_to_money(self.tax_micros)

    @property
    def included_amount(self):
        """The part of the charge a money allowance covered (`charge` is what is left to bill)."""
        return micros_to_money(self.included_micros or 0)

    @property
    def charged_quantity(self):
        if self.rated_quantity is None:
            return None
        return self.rated_quantity - (self.included_quantity or 0)


class UsageRecord(RecordFields):
    """A mediated record: what billing, metering, usage views and rebalance read. The table holds
    nothing else, so it carries no index or constraint for records that wait."""

    file = reference(MediationFile, "mediated_records", optional=False)
    service = reference(Service, "usage")
    period = reference(SubscriptionPeriod, "usage")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status="mediated", stage="done", reason="", is_duplicate=False),
                name="usage_record_is_mediated",
            ),
            models.CheckConstraint(
                condition=Q(charge_micros__isnull=False, tax_micros__isnull=False),
                name="usage_record_mediated_has_charge",
            ),
        ]
        indexes = [
            # BRIN on PostgreSQL (migrations 0014, 0015): rows arrive in (file, line) order.
            models.Index(fields=["file", "line_no"], name="usage_record_file_line_idx"),
            # Also serves a period's records (a period is a service and a time range): a separate
            # period index cost 0.8 s of every 100k records written.
            models.Index(fields=["service", "usage_at"], name="usage_record_service_time_idx"),
        ]


class QuarantinedRecord(RecordFields):
    """A record that did not pass a gate (quarantined, with its reason) or waits at one (pending,
    after a `mediate <stage>` that stopped before tax). Reprocess and rebalance move a record to
    `UsageRecord` when it passes every gate, and back here when it fails one, in one transaction;
    a moved record gets a new id in its new table (its file and line stay)."""

    file = reference(MediationFile, "waiting_records", optional=False)

    class Meta:
        verbose_name = "quarantined record"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "quarantined", "void"]), name="usage_waiting_not_mediated"
            ),
            models.CheckConstraint(
                condition=~Q(status="void") | Q(reason__in=["SUPERSEDED", "CANCELLATION"]),
                name="usage_void_is_corrected",
            ),
            models.CheckConstraint(
                condition=~Q(status="quarantined", reason=""), name="usage_record_quarantine_has_reason"
            ),
            models.CheckConstraint(
                condition=Q(is_duplicate=False) | Q(status="quarantined", reason="DUPLICATE"),
                name="usage_record_duplicate_is_quarantined",
            ),
        ]
        indexes = [
            models.Index(fields=["file", "line_no"], name="usage_waiting_file_line_idx"),
            models.Index(fields=["stage", "reason"], name="usage_waiting_stage_idx"),
        ]


class FileRecord(RecordFields):
    """Every record of a file, mediated or not (a view over both tables, migration 0015): what a
    file's counts, response file and ingest reply read. A record is one line of its file, so
    (file, line) is its key here; `id` is its id in its own table."""

    pk = models.CompositePrimaryKey("file_id", "line_no")
    id = models.BigIntegerField()
    file = reference(MediationFile, "records", optional=False, on_delete=models.DO_NOTHING)

    class Meta:
        managed = False
        db_table = "usage_filerecord"


class RecordKey(models.Model):
    """Never billed twice: where each record key of a collector was first kept (file, line).

    The primary key is the guarantee: a batch COPYs the keys of the records it keeps (every record
    that is not a DUPLICATE) in its transaction, and a key already here refuses the batch. Its own
    narrow table, not a unique index on the records: the dedup lookup reads this alone, and writing
    records maintains one index less. Text keys in byte order ("C"), not hashes (random inserts)."""

    pk = models.CompositePrimaryKey("collector_id", "record_key")
    collector = models.ForeignKey(
        UsageCollector, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    record_key = models.CharField(max_length=255)
    file = models.ForeignKey(
        MediationFile, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    line_no = models.PositiveIntegerField()

    def __str__(self):
        return f"{self.record_key} (file {self.file_id}, line {self.line_no})"


class Correction(models.Model):
    """A line that names an earlier record of its collector by key, to replace or cancel it (the
    collector maps a `corrects` or `cancels` column). Noted when its file is mediated, applied once
    the correcting record is mediated: the earlier record becomes void (kept, never billed, its
    message naming this line), and the cycles of both are re-rated in time order. Refused, with the
    reason in `message`, when the key is unknown, the record is already corrected, or a period is
    invoiced; the correcting record is then quarantined CORRECTION_REFUSED."""

    class Action(models.TextChoices):
        REPLACE = "replace", "Replaces"
        CANCEL = "cancel", "Cancels"

    class State(models.TextChoices):
        NOTED = "noted", "Waiting for the correcting record"
        APPLIED = "applied", "Applied"
        REFUSED = "refused", "Refused"

    collector = models.ForeignKey(UsageCollector, on_delete=models.CASCADE, related_name="+", db_index=False)
    file = models.ForeignKey(MediationFile, on_delete=models.CASCADE, related_name="corrections")
    line_no = models.PositiveIntegerField()
    record_key = models.CharField(max_length=255, help_text="The key of the record it corrects.")
    action = models.CharField(max_length=8, choices=Action.choices)
    state = models.CharField(max_length=8, choices=State.choices, default=State.NOTED)
    original_file = models.ForeignKey(
        MediationFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    original_line = models.PositiveIntegerField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True, default="")
    noted_at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-noted_at", "file_id", "line_no"]
        constraints = [
            models.UniqueConstraint(fields=["file", "line_no"], name="usage_correction_one_per_line"),
            models.CheckConstraint(
                condition=~Q(state="applied") | Q(original_file__isnull=False, original_line__isnull=False),
                name="usage_correction_applied_names_original",
            ),
            models.CheckConstraint(
                condition=~Q(state="refused") | ~Q(message=""), name="usage_correction_refusal_says_why"
            ),
        ]
        indexes = [models.Index(fields=["collector", "state"], name="usage_correction_state_idx")]

    def __str__(self):
        return f"{self.get_action_display()} {self.record_key} (file {self.file_id}, line {self.line_no})"


class PeriodCounter(models.Model):
    """What a subscription period has used so far, for rating the next records in time order: an
    allowance's drawn quantity (kind A: owner = the subscription that brings it, ref = the included
    value) or a period-cumulative tier's quantity (kind T: owner 0, ref = the rate). Base units.

    Mediation adds each batch's use; rebalance deletes the counters of what it re-rates and counts
    again from the first record of the period."""

    class Kind(models.TextChoices):
        ALLOWANCE = "A", "Allowance drawn"
        TIER = "T", "Tier quantity"

    period = models.ForeignKey(
        SubscriptionPeriod, on_delete=models.CASCADE, related_name="counters", db_constraint=False, db_index=False
    )
    kind = models.CharField(max_length=1, choices=Kind.choices)
    owner_id = models.BigIntegerField()
    ref_id = models.BigIntegerField()
    total = models.DecimalField(**TOTAL, help_text="Base units, or micro-units of a money allowance.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["period", "kind", "owner_id", "ref_id"], name="usage_counter_unique"),
            models.CheckConstraint(condition=models.Q(total__gte=0), name="usage_counter_not_negative"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.ref_id}: {self.total}"
