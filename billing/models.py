"""The billing domain an operator manages: customers, their services and how usage is priced.

Integrity lives in the database (check, unique and non-overlap constraints) because mediation
writes with COPY and `UPDATE ... FROM`, which never call `save()` or `clean()`.
"""

import datetime as dt
import functools
import operator
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .overlaps import IDENTIFIER_OVERLAP, PERIOD_OVERLAP, PLAN_OVERLAP

MONEY = {"max_digits": 18, "decimal_places": 6}
# A price per unit: 10 decimals (wholesale data is priced in millionths of a cent per byte); at most
# 99,999,999.9999999999, so a record's exact amount stays within the engine's 128-bit integers.
PRICE = {"max_digits": 18, "decimal_places": 10}
# A usage quantity in base units (seconds, bytes, items), exact to a thousandth: a record's as
# received, and what increments make of it. 15 digits before the point hold the largest bound.
QUANTITY_PLACES = 3
QUANTITY = {"max_digits": 18, "decimal_places": QUANTITY_PLACES}
# A total of such quantities (an invoice line's, a period counter's, an allowance): 24 digits.
TOTAL = {"max_digits": 24, "decimal_places": QUANTITY_PLACES}
THOUSANDTH = Decimal("0.001")
# An increment (base units): a thousandth at least; at most 10^12 (a TB), so a record's exact
# amount (thousandths x 10^-10 price units) stays within the engine's 128-bit integers.
INCREMENT = {
    "max_digits": 16,
    "decimal_places": QUANTITY_PLACES,
    "validators": [MinValueValidator(THOUSANDTH), MaxValueValidator(10**12)],
}


class Category(models.TextChoices):
    TELEPHONY = "telephony", "Telephony"
    DATA = "data", "Data"
    MISC = "misc", "Service & equipment"


class Unit(models.TextChoices):
    """Units a price is quoted in. Usage quantities are held in each unit's base measure:
    seconds for time, bytes for data, a count for messages and items. Data units are decimal
    (kB, MB, GB: 10^3, 10^6, 10^9 bytes) or binary (KiB, MiB, GiB: 2^10, 2^20, 2^30), each explicit."""

    SECOND = "second", "second"
    MINUTE = "minute", "minute"
    HOUR = "hour", "hour"
    KB = "kb", "kB"
    MB = "mb", "MB"
    GB = "gb", "GB"
    KIB = "kib", "KiB"
    MIB = "mib", "MiB"
    GIB = "gib", "GiB"
    MESSAGE = "message", "message"
    EACH = "each", "each"


UNIT_BASE_SIZE = {
    Unit.SECOND: 1,
    Unit.MINUTE: 60,
    Unit.HOUR: 3600,
    Unit.KB: 1000,
    Unit.MB: 1000**2,
    Unit.GB: 1000**3,
    Unit.KIB: 1024,
    Unit.MIB: 1024**2,
    Unit.GIB: 1024**3,
    Unit.MESSAGE: 1,
    Unit.EACH: 1,
}

# What a unit measures. A quantity allowance is drawn only by records whose rate is priced in a
# unit of the same measure (minutes by calls, not by SMS); a money allowance by any charge.
UNIT_MEASURE = {
    Unit.SECOND: "time",
    Unit.MINUTE: "time",
    Unit.HOUR: "time",
    Unit.KB: "volume",
    Unit.MB: "volume",
    Unit.GB: "volume",
    Unit.KIB: "volume",
    Unit.MIB: "volume",
    Unit.GIB: "volume",
    Unit.MESSAGE: "items",
    Unit.EACH: "items",
}
MEASURE_UNITS = {m: [u for u, um in UNIT_MEASURE.items() if um == m] for m in ("time", "volume", "items")}
# The measures usage of a category (and of the usage types Tollgate knows) can be priced in.
CATEGORY_MEASURES = {
    "telephony": ("time", "items"),
    "data": ("volume", "time"),
    "misc": ("items",),
}
USAGE_TYPE_MEASURES = {
    "voice": ("time",),
    "sms": ("items",),
    "mms": ("items",),
    "data": ("volume", "time"),
    "equipment": ("items",),
    "service_charge": ("items",),
    "feature": ("items",),
}


def plain(value: Decimal) -> str:
    """A decimal without its trailing zeros and never in exponent form (0.1000000000 → 0.1, 10 → 10)."""
    return f"{value.normalize():f}" if value is not None else ""


class Account(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    number = models.CharField("account number", max_length=32)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    bill_day = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(28)],
        help_text="Day of the month each billing cycle starts (1-28).",
    )
    currency = models.CharField(max_length=3, default="AUD")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["number"], name="billing_account_number_unique"),
            models.CheckConstraint(
                condition=Q(bill_day__gte=1, bill_day__lte=28), name="billing_account_bill_day_1_28"
            ),
        ]

    def __str__(self):
        return f"{self.number} {self.name}"


class Service(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CANCELLED = "cancelled", "Cancelled"

    class Type(models.TextChoices):
        MOBILE = "mobile", "Mobile"
        FIXED_VOICE = "fixed_voice", "Fixed voice"
        NBN = "nbn", "NBN"
        DSL = "dsl", "DSL"
        OTHER = "other", "Other"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="services")
    service_id = models.CharField("service ID", max_length=40)
    sub_id = models.CharField("service sub ID", max_length=40, blank=True, default="")
    service_type = models.CharField(max_length=16, choices=Type.choices, default=Type.MOBILE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    description = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["service_id"]
        constraints = [
            models.UniqueConstraint(fields=["service_id"], name="billing_service_service_id_unique"),
        ]
        indexes = [models.Index(fields=["sub_id"], name="billing_service_sub_id_idx")]

    def __str__(self):
        return self.service_id


class ServiceIdentifier(models.Model):
    """A value (MSISDN, username, circuit id...) that names a service in usage records.

    Active over [active_from, active_to); an open end means still active. One value is never
    active on two services at the same instant, so identification is unambiguous.
    """

    class Kind(models.TextChoices):
        MSISDN = "msisdn", "MSISDN"
        USERNAME = "username", "Username"
        CIRCUIT_ID = "circuit_id", "Circuit ID"
        IMSI = "imsi", "IMSI"
        IP = "ip", "IP address"
        OTHER = "other", "Other"

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="identifiers")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MSISDN)
    value = models.CharField(max_length=64)
    active_from = models.DateTimeField()
    active_to = models.DateTimeField(null=True, blank=True, help_text="Exclusive; empty = still active.")

    class Meta:
        ordering = ["value", "active_from"]
        constraints = [
            models.CheckConstraint(
                condition=Q(active_to__isnull=True) | Q(active_to__gt=models.F("active_from")),
                name="billing_identifier_range_valid",
                violation_error_message="The identifier must end after it starts.",
            ),
            models.CheckConstraint(condition=~Q(value=""), name="billing_identifier_value_not_empty"),
        ]
        indexes = [
            models.Index(fields=["value", "active_from"], name="billing_identifier_lookup_idx"),
        ]

    def __str__(self):
        until = self.active_to.isoformat() if self.active_to else "open"
        return f"{self.value} ({self.active_from:%Y-%m-%d %H:%M} to {until})"

    def clean(self):
        self.value = (self.value or "").strip()
        if self.active_to and self.active_from and self.active_to <= self.active_from:
            raise ValidationError({"active_to": "The identifier must end after it starts."})
        IDENTIFIER_OVERLAP.validate(self)


class TierMode(models.TextChoices):
    NONE = "none", "No tiers"
    GRADUATED = "graduated", "Graduated"
    VOLUME = "volume", "Volume"


class TierScope(models.TextChoices):
    RECORD = "record", "Per record"
    PERIOD = "period", "Cumulative over the period"


class RoundingMode(models.TextChoices):
    HALF_UP = "half_up", "Half up"
    UP = "up", "Up (away from zero)"
    DOWN = "down", "Down (towards zero)"


class RateCard(models.Model):
    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="AUD")
    rounding_decimals = models.PositiveSmallIntegerField(
        default=4, validators=[MaxValueValidator(6)], help_text="Decimals a record's charge is rounded to."
    )
    rounding_mode = models.CharField(max_length=8, choices=RoundingMode.choices, default=RoundingMode.HALF_UP)
    is_default = models.BooleanField(default=False, help_text="Used when no plan or product card prices a record.")
    split_time_bands = models.BooleanField(
        default=False,
        help_text="Price a call crossing a time band edge per part, each at its band's rate; "
        "otherwise the band at the start of the call prices all of it.",
    )

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="billing_ratecard_code_unique"),
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="billing_ratecard_one_default"
            ),
            models.CheckConstraint(condition=Q(rounding_decimals__lte=6), name="billing_ratecard_decimals_le_6"),
        ]

    def __str__(self):
        return f"{self.code} {self.name}"


class TimeBand(models.Model):
    """When a rate applies: days of the week (ISO 1 = Monday … 7 = Sunday, H = public holiday) and a
    time of day in the billing time zone, [starts, ends). `ends` at or before `starts` wraps past
    midnight; equal times cover the whole day. A public holiday counts only as H, not as its weekday."""

    code = models.CharField(max_length=32)
    name = models.CharField(max_length=100)
    days = models.CharField(
        max_length=8,
        default="12345",
        validators=[RegexValidator(r"^[1-7H]+$", "Use the digits 1 (Monday) to 7 (Sunday) and H (public holiday).")],
    )
    starts = models.TimeField(default=dt.time(0))
    ends = models.TimeField(default=dt.time(0))

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="billing_timeband_code_unique"),
            models.CheckConstraint(condition=Q(days__regex=r"^[1-7H]+$"), name="billing_timeband_days_valid"),
        ]

    def __str__(self):
        return f"{self.code} ({self.days} {self.starts:%H:%M}-{self.ends:%H:%M})"


class Holiday(models.Model):
    """A dated exception for time bands: usage on this day (billing time zone) matches bands with H."""

    date = models.DateField()
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["date"]
        constraints = [models.UniqueConstraint(fields=["date"], name="billing_holiday_date_unique")]

    def __str__(self):
        return f"{self.date} {self.name}"


class DestinationZone(models.Model):
    """A named group of destinations (e.g. "Europe"), as prefixes. A rate or an allowance for a zone
    covers any destination starting with one of its prefixes; the matched prefix's length counts for
    the longest-prefix rule like a rate's own prefix."""

    code = models.CharField(max_length=32)
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["code"], name="billing_zone_code_unique")]

    def __str__(self):
        return f"{self.code} {self.name}"


class ZonePrefix(models.Model):
    zone = models.ForeignKey(DestinationZone, on_delete=models.CASCADE, related_name="prefixes")
    prefix = models.CharField(max_length=32, validators=[RegexValidator(r"^\S+$", "A prefix has no spaces.")])

    class Meta:
        ordering = ["zone", "prefix"]
        constraints = [
            models.UniqueConstraint(fields=["zone", "prefix"], name="billing_zoneprefix_unique"),
            models.CheckConstraint(condition=~Q(prefix=""), name="billing_zoneprefix_not_empty"),
        ]

    def __str__(self):
        return self.prefix


class Rate(models.Model):
    """A price, on a card or for one service (an override that beats every card).

    Matched by category, usage type, the longest destination prefix, the time band at the start of
    the usage and the usage date (a new version of a price is a new rate from a date). The price
    maths is in docs/rating.md.
    """

    rate_card = models.ForeignKey(RateCard, on_delete=models.CASCADE, related_name="rates", null=True, blank=True)
    service = models.ForeignKey(
        "Service",
        on_delete=models.CASCADE,
        related_name="rate_overrides",
        null=True,
        blank=True,
        help_text="Set for a per-service override instead of a card.",
    )
    category = models.CharField(max_length=16, choices=Category.choices)
    usage_type = models.CharField(max_length=32, blank=True, default="", help_text="Empty matches any.")
    destination_prefix = models.CharField(max_length=32, blank=True, default="", help_text="Empty matches any.")
    destination_name = models.CharField(max_length=100, blank=True, default="")
    zone = models.ForeignKey(
        DestinationZone,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="rates",
        help_text="Instead of a prefix: any destination of this zone.",
    )
    time_band = models.ForeignKey(
        TimeBand, on_delete=models.PROTECT, null=True, blank=True, related_name="rates", help_text="Empty: any time."
    )
    effective_from = models.DateField(null=True, blank=True, help_text="Empty: since always.")
    effective_to = models.DateField(null=True, blank=True, help_text="Inclusive; empty: open-ended.")
    unit = models.CharField(max_length=8, choices=Unit.choices)
    price_per_unit = models.DecimalField(**PRICE)
    connect_fee = models.DecimalField(**MONEY, default=Decimal("0"), help_text="Charged once per chargeable record.")
    first_increment = models.DecimalField(
        **INCREMENT,
        null=True,
        blank=True,
        help_text="Base units charged at least, then by increment (empty: the increment).",
    )
    increment = models.DecimalField(
        **INCREMENT,
        default=1,
        help_text="Quantities are rounded up to this many base units (seconds, bytes, items); a fraction down to "
        "a thousandth (0.1 s, 0.001 of an item) is allowed.",
    )
    minimum_charge = models.DecimalField(**MONEY, null=True, blank=True)
    maximum_charge = models.DecimalField(**MONEY, null=True, blank=True, help_text="Cap per record.")
    tier_mode = models.CharField(
        max_length=10,
        choices=TierMode.choices,
        default=TierMode.NONE,
        help_text="Graduated: each unit at its tier's price. Volume: every unit at the tier reached.",
    )
    tier_scope = models.CharField(
        max_length=8,
        choices=TierScope.choices,
        default=TierScope.RECORD,
        help_text="Count tier quantities within each record, or cumulatively over the subscription period.",
    )
    rounding_decimals = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(6)],
        help_text="Decimals this rate's charges are rounded to; empty: the card's.",
    )
    rounding_mode = models.CharField(
        max_length=8, choices=RoundingMode.choices, blank=True, default="", help_text="Empty: the card's."
    )

    class Meta:
        ordering = ["rate_card", "category", "usage_type", "destination_prefix"]
        constraints = [
            # Expressions, not nulls_distinct=False: SQLite has no NULLS NOT DISTINCT.
            models.UniqueConstraint(
                Coalesce("rate_card", 0),
                Coalesce("service", 0),
                "category",
                "usage_type",
                "destination_prefix",
                Coalesce("zone", 0),
                Coalesce("time_band", 0),
                Coalesce("effective_from", Value(dt.date(1, 1, 1)), output_field=models.DateField()),
                name="billing_rate_unique_match",
                violation_error_message="This card already has a rate for that category, type, prefix, band and date.",
            ),
            models.CheckConstraint(
                condition=Q(rate_card__isnull=False, service__isnull=True)
                | Q(rate_card__isnull=True, service__isnull=False),
                name="billing_rate_card_xor_service",
                violation_error_message="A rate belongs to a rate card or, as an override, to one service.",
            ),
            models.CheckConstraint(
                condition=Q(zone__isnull=True) | Q(destination_prefix=""),
                name="billing_rate_prefix_or_zone",
                violation_error_message="A rate matches a destination prefix or a zone, not both.",
            ),
            models.CheckConstraint(condition=Q(price_per_unit__gte=0), name="billing_rate_price_not_negative"),
            models.CheckConstraint(
                condition=Q(rounding_decimals__isnull=True) | Q(rounding_decimals__lte=6),
                name="billing_rate_decimals_le_6",
            ),
            models.CheckConstraint(condition=Q(connect_fee__gte=0), name="billing_rate_connect_not_negative"),
            models.CheckConstraint(condition=Q(increment__gte=THOUSANDTH), name="billing_rate_increment_positive"),
            models.CheckConstraint(
                condition=Q(first_increment__isnull=True) | Q(first_increment__gte=THOUSANDTH),
                name="billing_rate_first_increment_positive",
            ),
            models.CheckConstraint(
                condition=Q(minimum_charge__isnull=True)
                | Q(maximum_charge__isnull=True)
                | Q(maximum_charge__gte=models.F("minimum_charge")),
                name="billing_rate_cap_above_minimum",
                violation_error_message="The maximum charge is below the minimum charge.",
            ),
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True)
                | Q(effective_from__isnull=True)
                | Q(effective_to__gte=models.F("effective_from")),
                name="billing_rate_range_valid",
            ),
        ]

    def __str__(self):
        dest = self.zone.code if self.zone_id else (self.destination_prefix or "*")
        return (
            f"{self.get_category_display()} {self.usage_type or '*'} {dest}: {plain(self.price_per_unit)}/{self.unit}"
        )

    @property
    def charge_decimals(self) -> int | None:
        """The decimals a charge of this rate is rounded to: its own, else its card's."""
        if self.rounding_decimals is not None:
            return self.rounding_decimals
        return self.rate_card.rounding_decimals if self.rate_card_id else None


class RateTier(models.Model):
    """From `from_quantity` (in the rate's unit) on, units are priced `price_per_unit`; below the
    first tier the rate's own price applies. How tiers combine is the rate's tier mode and scope."""

    rate = models.ForeignKey(Rate, on_delete=models.CASCADE, related_name="tiers")
    from_quantity = models.DecimalField(max_digits=18, decimal_places=4, help_text="In the rate's unit.")
    price_per_unit = models.DecimalField(**PRICE)
    increment = models.DecimalField(
        **INCREMENT,
        null=True,
        blank=True,
        help_text="Base units the usage in this tier is rounded up to (e.g. per second after a first minute); "
        "empty: the rate's increment. Per-record tiers only.",
    )

    class Meta:
        ordering = ["rate", "from_quantity"]
        constraints = [
            models.UniqueConstraint(fields=["rate", "from_quantity"], name="billing_ratetier_unique_start"),
            models.CheckConstraint(
                condition=Q(increment__isnull=True) | Q(increment__gte=THOUSANDTH),
                name="billing_ratetier_increment_positive",
            ),
            models.CheckConstraint(condition=Q(from_quantity__gt=0), name="billing_ratetier_starts_above_zero"),
            models.CheckConstraint(condition=Q(price_per_unit__gte=0), name="billing_ratetier_price_not_negative"),
        ]

    def __str__(self):
        return f"from {plain(self.from_quantity)}: {plain(self.price_per_unit)}"

    def clean(self):
        """A tier's own increment rounds the usage within it, so it needs tiers counted per record,
        and a tier start the increment before it divides (whole steps fill each tier)."""
        super().clean()
        if self.increment is None or self.rate_id is None or self.from_quantity is None:
            return
        rate = self.rate
        if rate.tier_scope != TierScope.RECORD:
            raise ValidationError({"increment": "A tier's own increment needs tiers counted per record."})
        start = self.from_quantity * UNIT_BASE_SIZE[rate.unit]
        below = rate.tiers.filter(from_quantity__lt=self.from_quantity).exclude(pk=self.pk).order_by("-from_quantity")
        before = next(iter(below), None)
        step = (before.increment if before and before.increment else None) or (
            rate.increment if before is not None or rate.first_increment is None else rate.first_increment
        )
        if start % step:
            raise ValidationError(
                {
                    "from_quantity": f"The tier starts at {plain(start)} base units, not a whole number of the "
                    f"{step}-unit steps before it: choose a start they divide."
                }
            )


class Plan(models.Model):
    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    rate_card = models.ForeignKey(RateCard, on_delete=models.PROTECT, null=True, blank=True, related_name="plans")
    monthly_fee = models.DecimalField(**MONEY, default=Decimal("0"))
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="billing_plan_code_unique"),
            models.CheckConstraint(condition=Q(monthly_fee__gte=0), name="billing_plan_fee_not_negative"),
        ]

    def __str__(self):
        return f"{self.code} {self.name}"


class Product(models.Model):
    """Something sold beside the plan: a bolt-on, equipment, a service feature or charge."""

    class Kind(models.TextChoices):
        BOLT_ON = "bolt_on", "Bolt-on"
        EQUIPMENT = "equipment", "Equipment"
        FEATURE = "feature", "Service feature"
        SERVICE_CHARGE = "service_charge", "Service charge"

    class ChargeType(models.TextChoices):
        RECURRING = "recurring", "Recurring (per period)"
        ONE_TIME = "one_time", "One-time"

    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    charge_type = models.CharField(max_length=16, choices=ChargeType.choices, default=ChargeType.RECURRING)
    price = models.DecimalField(**MONEY, default=Decimal("0"))
    rate_card = models.ForeignKey(RateCard, on_delete=models.PROTECT, null=True, blank=True, related_name="products")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="billing_product_code_unique"),
            models.CheckConstraint(condition=Q(price__gte=0), name="billing_product_price_not_negative"),
        ]

    def __str__(self):
        return f"{self.code} {self.name}"


class Subscription(models.Model):
    """A service subscribed to a plan or a product (bolt-on, equipment...) over dates, inclusive."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="subscriptions")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, null=True, blank=True, related_name="subscriptions")
    starts_on = models.DateField()
    ends_on = models.DateField(null=True, blank=True, help_text="Inclusive; empty = open-ended.")
    quantity = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="Seats, lines or units subscribed: multiplies the fee or price and every allowance it brings.",
    )

    class Meta:
        ordering = ["service", "starts_on"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1), name="billing_subscription_quantity_positive"),
            models.CheckConstraint(
                condition=(Q(plan__isnull=False) & Q(product__isnull=True))
                | (Q(plan__isnull=True) & Q(product__isnull=False)),
                name="billing_subscription_plan_xor_product",
                violation_error_message="A subscription is to exactly one plan or one product.",
            ),
            models.CheckConstraint(
                condition=Q(ends_on__isnull=True) | Q(ends_on__gte=models.F("starts_on")),
                name="billing_subscription_range_valid",
                violation_error_message="A subscription cannot end before it starts.",
            ),
        ]

    def __str__(self):
        what = self.plan or self.product
        return f"{self.service_id and self.service} → {what} from {self.starts_on}"

    def clean(self):
        if self.ends_on and self.starts_on and self.ends_on < self.starts_on:
            raise ValidationError({"ends_on": "A subscription cannot end before it starts."})
        if (self.plan_id is None) == (self.product_id is None):
            raise ValidationError("Choose exactly one of plan or product.")
        PLAN_OVERLAP.validate(self)


def billing_day_start(day: dt.date) -> dt.datetime:
    """The instant a calendar day starts in the billing time zone."""
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min), timezone.get_default_timezone())


class SubscriptionPeriod(models.Model):
    """A billing cycle of a service: usage is bucketed into the period containing its time.

    Dates are what the operator sees (end inclusive); `starts_at`/`ends_at` are the same days
    as instants in the billing time zone, kept so that bucketing is a plain range join.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        INVOICED = "invoiced", "Invoiced"

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="periods")
    start_date = models.DateField()
    end_date = models.DateField(help_text="Inclusive.")
    starts_at = models.DateTimeField(editable=False)
    ends_at = models.DateTimeField(editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)

    class Meta:
        ordering = ["service", "start_date"]
        constraints = [
            models.UniqueConstraint(fields=["service", "start_date"], name="billing_period_service_start_unique"),
            models.CheckConstraint(
                condition=Q(end_date__gte=models.F("start_date")),
                name="billing_period_range_valid",
                violation_error_message="A period cannot end before it starts.",
            ),
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="billing_period_instants_valid"
            ),
        ]
        indexes = [models.Index(fields=["status", "end_date"], name="billing_period_status_idx")]

    def __str__(self):
        return f"{self.start_date} to {self.end_date}"

    def save(self, *args, **kwargs):
        self.set_instants()
        super().save(*args, **kwargs)

    def clean(self):
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValidationError({"end_date": "A period cannot end before it starts."})
        PERIOD_OVERLAP.validate(self)

    def set_instants(self):
        """Derive the bucketing instants; bulk writers call this since they bypass save()."""
        self.starts_at = billing_day_start(self.start_date)
        self.ends_at = billing_day_start(self.end_date + dt.timedelta(days=1))


ALLOWANCE_UNITS = [*Unit.choices, ("money", "money (card currency)")]


class IncludedValue(models.Model):
    """An allowance included in a plan or bolt-on, renewed every subscription period, drawn in time
    order: in rated quantity, or, in unit `money`, in charge after quantity allowances and discounts
    (docs/rating.md, section 5)."""

    MONEY = "money"

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, null=True, blank=True, related_name="included_values")
    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, null=True, blank=True, related_name="included_values"
    )
    category = models.CharField(max_length=16, choices=Category.choices)
    usage_type = models.CharField(max_length=32, blank=True, default="", help_text="Empty covers any.")
    zone = models.ForeignKey(
        DestinationZone,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="included_values",
        help_text="Empty covers any destination.",
    )
    quantity = models.DecimalField(
        max_digits=18, decimal_places=4, help_text="In the unit; a money allowance is an amount in the card's currency."
    )
    unit = models.CharField(max_length=8, choices=ALLOWANCE_UNITS)
    priority = models.PositiveSmallIntegerField(
        default=100,
        help_text="Lower is drawn first. Equal priorities keep the default order: bolt-on before plan, "
        "earliest subscription end, then the allowance created first.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(plan__isnull=False) & Q(product__isnull=True))
                | (Q(plan__isnull=True) & Q(product__isnull=False)),
                name="billing_included_plan_xor_product",
                violation_error_message="An allowance belongs to exactly one plan or one product.",
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="billing_included_quantity_positive"),
            models.CheckConstraint(
                condition=functools.reduce(
                    operator.or_,
                    (
                        Q(category=category, unit__in=[u for m in measures for u in MEASURE_UNITS[m]])
                        for category, measures in CATEGORY_MEASURES.items()
                    ),
                    Q(unit="money"),
                ),
                name="billing_included_unit_fits_category",
                violation_error_message=(
                    "That unit cannot measure usage of this category: telephony in time or messages, data in "
                    "volume or time, service & equipment in items (or an allowance in money, for any)."
                ),
            ),
        ]

    def __str__(self):
        return f"{self.quantity} {self.unit} {self.category} {self.usage_type}".strip()

    @property
    def measure(self) -> str:
        return "money" if self.unit == self.MONEY else UNIT_MEASURE[self.unit]

    def clean(self):
        """A quantity allowance is drawn only by usage priced in its unit's measure: one that no usage
        of its category or usage type can be priced in would never be drawn, so it is refused."""
        super().clean()
        if not self.unit or self.unit == self.MONEY or not self.category:
            return
        allowed = CATEGORY_MEASURES[self.category]
        what = f"{self.get_category_display()} usage"
        if self.usage_type in USAGE_TYPE_MEASURES:
            allowed = tuple(m for m in allowed if m in USAGE_TYPE_MEASURES[self.usage_type]) or allowed
            what = f"{self.get_category_display()} usage of type {self.usage_type}"
        if self.measure not in allowed:
            units = ", ".join(str(Unit(u).label) for m in allowed for u in MEASURE_UNITS[m])
            raise ValidationError(
                {"unit": f"{what} is priced in {' or '.join(allowed)}, not {self.measure}: use {units} or money."}
            )


class ChargeModel(models.TextChoices):
    """How an aggregate charge prices its period's metric (docs/rating.md, section 8)."""

    STANDARD = "standard", "Standard (a price per unit)"
    GRADUATED = "graduated", "Graduated (each tier's units at its price)"
    VOLUME = "volume", "Volume (every unit at the tier the total reaches)"
    PACKAGE = "package", "Package (a price per started package)"
    PERCENTAGE = "percentage", "Percentage (of an amount, per event)"
    GRADUATED_PERCENTAGE = "graduated_percentage", "Graduated percentage (a rate per tier of the amount)"


TIERED_MODELS = (ChargeModel.GRADUATED, ChargeModel.VOLUME, ChargeModel.GRADUATED_PERCENTAGE)
PERCENT_MODELS = (ChargeModel.PERCENTAGE, ChargeModel.GRADUATED_PERCENTAGE)


class Aggregation(models.TextChoices):
    """The metering aggregations a period's metric may use (metering.models.MeterType)."""

    SUM = "sum", "Sum of a field"
    COUNT = "count", "Count of records"
    MAX = "max", "Maximum of a field"
    UNIQUE = "unique", "Unique count of a field"


# Record fields an aggregate charge measures: numeric ones in their base measure, text ones for unique counts.
AGGREGATE_NUMBER_FIELDS = {"duration": "time", "volume": "volume", "quantity": "items", "amount_micros": "money"}
AGGREGATE_TEXT_FIELDS = ("identifier", "destination", "record_id", "usage_type")
AGGREGATE_FIELD_CHOICES = [
    ("duration", "duration (seconds)"),
    ("volume", "volume (bytes)"),
    ("quantity", "quantity"),
    ("amount_micros", "amount (of the record)"),
    *((name, name) for name in AGGREGATE_TEXT_FIELDS),
]
AGGREGATE_UNITS = [*Unit.choices, ("money", "money (the account's currency)")]


class AggregateCharge(models.Model):
    """A charge on a period's aggregate, SaaS-style (Lago, Kill Bill, OpenMeter): a metric over the
    subscription period (sum, count, maximum or unique count of a record field, of the records its
    filters select) priced by a charge model on the period's total, once, at Main Billing. The
    records it covers are identified and bucketed, but not priced one by one (docs/rating.md)."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, null=True, blank=True, related_name="aggregate_charges")
    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, null=True, blank=True, related_name="aggregate_charges"
    )
    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200, help_text="The invoice line's description.")
    aggregation = models.CharField(max_length=8, choices=Aggregation.choices, default=Aggregation.COUNT)
    field = models.CharField(
        max_length=16, choices=AGGREGATE_FIELD_CHOICES, blank=True, default="", help_text="Not for a count."
    )
    unit = models.CharField(
        max_length=8,
        choices=AGGREGATE_UNITS,
        default=Unit.EACH,
        help_text="The unit the metric is priced in: a sum of durations per minute, of volumes per GB; "
        "counts in each; an amount in money.",
    )
    category = models.CharField(
        max_length=16, choices=Category.choices, blank=True, default="", help_text="Empty: any."
    )
    usage_type = models.CharField(max_length=32, blank=True, default="", help_text="Empty: any.")
    zone = models.ForeignKey(
        DestinationZone,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="aggregate_charges",
        help_text="Empty: any destination.",
    )
    filter_field = models.CharField(
        max_length=16,
        choices=[(name, name) for name in AGGREGATE_TEXT_FIELDS],
        blank=True,
        default="",
        help_text="Also only records whose field is one of the values below.",
    )
    filter_values = models.CharField(max_length=500, blank=True, default="", help_text="Comma-separated.")
    charge_model = models.CharField(max_length=24, choices=ChargeModel.choices, default=ChargeModel.STANDARD)
    price_per_unit = models.DecimalField(
        **PRICE, default=Decimal("0"), help_text="Standard: per unit. Package: per package."
    )
    package_size = models.DecimalField(
        max_digits=18, decimal_places=6, null=True, blank=True, help_text="Package: units per package."
    )
    free_units = models.DecimalField(
        max_digits=18, decimal_places=6, default=Decimal("0"), help_text="Package: units free before the first package."
    )
    rate = models.DecimalField(
        max_digits=9, decimal_places=6, null=True, blank=True, help_text="Percentage: per cent of the amount."
    )
    fixed_fee = models.DecimalField(**MONEY, default=Decimal("0"), help_text="Percentage: per event.")
    free_events = models.PositiveIntegerField(default=0, help_text="Percentage: first events without the fixed fee.")
    free_amount = models.DecimalField(
        **MONEY, default=Decimal("0"), help_text="Percentage: first amount of the period without the rate."
    )
    minimum_per_event = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="Percentage: each event's fee at least."
    )
    maximum_per_event = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="Percentage: each event's fee at most."
    )

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="billing_aggregate_code_unique"),
            models.CheckConstraint(
                condition=(Q(plan__isnull=False) & Q(product__isnull=True))
                | (Q(plan__isnull=True) & Q(product__isnull=False)),
                name="billing_aggregate_plan_xor_product",
                violation_error_message="An aggregate charge belongs to exactly one plan or one product.",
            ),
            models.CheckConstraint(
                condition=Q(aggregation="count", field="") | (~Q(aggregation="count") & ~Q(field="")),
                name="billing_aggregate_field_needed",
                violation_error_message="A sum, maximum or unique count needs a field; a count has none.",
            ),
            models.CheckConstraint(
                condition=~Q(aggregation__in=["sum", "max"]) | Q(field__in=list(AGGREGATE_NUMBER_FIELDS)),
                name="billing_aggregate_sum_of_number",
                violation_error_message="A sum or maximum needs a numeric field (duration, volume, quantity, amount).",
            ),
            models.CheckConstraint(
                condition=~Q(charge_model__in=list(PERCENT_MODELS)) | Q(aggregation="sum", field="amount_micros"),
                name="billing_aggregate_percentage_of_amount",
                violation_error_message="A percentage is of an amount: aggregate the sum of the records' amount.",
            ),
            models.CheckConstraint(
                condition=~Q(charge_model="percentage") | Q(rate__isnull=False),
                name="billing_aggregate_percentage_rate",
                violation_error_message="A percentage charge needs its rate.",
            ),
            models.CheckConstraint(
                condition=~Q(charge_model="package") | Q(package_size__gt=0),
                name="billing_aggregate_package_size",
                violation_error_message="A package charge needs a package size above zero.",
            ),
            models.CheckConstraint(
                condition=Q(filter_field="", filter_values="") | (~Q(filter_field="") & ~Q(filter_values="")),
                name="billing_aggregate_filter_complete",
                violation_error_message="A field filter needs both the field and its values.",
            ),
            models.CheckConstraint(
                condition=Q(price_per_unit__gte=0, free_units__gte=0, fixed_fee__gte=0, free_amount__gte=0)
                & (Q(rate__isnull=True) | Q(rate__gte=0, rate__lte=100))
                & (Q(minimum_per_event__isnull=True) | Q(minimum_per_event__gte=0))
                & (
                    Q(minimum_per_event__isnull=True)
                    | Q(maximum_per_event__isnull=True)
                    | Q(maximum_per_event__gte=models.F("minimum_per_event"))
                ),
                name="billing_aggregate_amounts_valid",
                violation_error_message="Prices, fees and free units are not negative, a rate is 0 to 100 %, and "
                "the maximum per event is not below the minimum.",
            ),
        ]

    def __str__(self):
        return f"{self.code} {self.name}"

    def save(self, *args, **kwargs):
        self.filter_values = ",".join(self.values)  # matched as a list, without the spaces around values
        super().save(*args, **kwargs)

    @property
    def measure(self) -> str:
        """What the metric counts: time, volume, items or money (the unit must measure the same)."""
        if self.aggregation in (Aggregation.COUNT, Aggregation.UNIQUE):
            return "items"
        return AGGREGATE_NUMBER_FIELDS.get(self.field, "items")

    def clean(self):
        super().clean()
        if self.aggregation == Aggregation.COUNT and self.field:
            raise ValidationError({"field": "A count counts records: leave the field empty."})
        if self.aggregation != Aggregation.COUNT and not self.field:
            raise ValidationError({"field": "Choose the record field to aggregate."})
        if self.aggregation in (Aggregation.SUM, Aggregation.MAX) and self.field not in AGGREGATE_NUMBER_FIELDS:
            raise ValidationError({"field": "A sum or maximum needs a numeric field."})
        unit_measure = "money" if self.unit == "money" else UNIT_MEASURE.get(self.unit)
        if unit_measure != self.measure:
            units = (
                "money"
                if self.measure == "money"
                else ", ".join(str(Unit(u).label) for u in MEASURE_UNITS[self.measure])
            )
            raise ValidationError({"unit": f"The metric measures {self.measure}: price it in {units}."})
        if self.charge_model in PERCENT_MODELS and not (
            self.aggregation == Aggregation.SUM and self.field == "amount_micros"
        ):
            raise ValidationError({"charge_model": "A percentage is of an amount: aggregate the sum of the amount."})
        if self.charge_model == ChargeModel.PERCENTAGE and self.rate is None:
            raise ValidationError({"rate": "A percentage charge needs its rate."})
        if self.charge_model == ChargeModel.PACKAGE and not self.package_size:
            raise ValidationError({"package_size": "A package charge needs its package size."})
        if bool(self.filter_field) != bool((self.filter_values or "").strip()):
            raise ValidationError({"filter_values": "A field filter needs both the field and its values."})
        if (self.plan_id is None) == (self.product_id is None):
            raise ValidationError("Choose exactly one of plan or product.")

    @property
    def values(self) -> list[str]:
        return [v.strip() for v in (self.filter_values or "").split(",") if v.strip()]


class AggregateTier(models.Model):
    """A tier of a graduated, volume or graduated-percentage charge, from `from_quantity` (in the
    charge's unit) up to the next tier's start. Units below the first tier are free."""

    charge = models.ForeignKey(AggregateCharge, on_delete=models.CASCADE, related_name="tiers")
    from_quantity = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal("0"))
    price_per_unit = models.DecimalField(
        **PRICE, default=Decimal("0"), help_text="Per unit (or per block) of the tier; not for graduated percentage."
    )
    rate = models.DecimalField(
        max_digits=9, decimal_places=6, null=True, blank=True, help_text="Graduated percentage: per cent of the tier."
    )
    flat_fee = models.DecimalField(**MONEY, default=Decimal("0"), help_text="Charged once when usage enters the tier.")
    block_size = models.DecimalField(
        max_digits=18,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Kill Bill's tiered blocks: the tier's units are counted in started blocks of this size, "
        "priced per block. Empty: per unit.",
    )

    class Meta:
        ordering = ["charge", "from_quantity"]
        constraints = [
            models.UniqueConstraint(fields=["charge", "from_quantity"], name="billing_aggregatetier_unique_start"),
            models.CheckConstraint(
                condition=Q(from_quantity__gte=0, price_per_unit__gte=0, flat_fee__gte=0)
                & (Q(rate__isnull=True) | Q(rate__gte=0, rate__lte=100))
                & (Q(block_size__isnull=True) | Q(block_size__gt=0)),
                name="billing_aggregatetier_values_valid",
                violation_error_message="A tier starts at 0 or above; prices and fees are not negative, a rate is "
                "0 to 100 % and a block above zero.",
            ),
        ]

    def __str__(self):
        return f"from {plain(self.from_quantity)}"


class Discount(models.Model):
    """Money off rated usage, for one account or one service, effective dated. One discount applies
    to a record: a service's before an account's, a category's before an all-usage one, then the
    latest start (docs/rating.md)."""

    class Kind(models.TextChoices):
        PERCENT = "percent", "Percentage"
        PER_UNIT = "per_unit", "Amount per rated unit"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, null=True, blank=True, related_name="discounts")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, null=True, blank=True, related_name="discounts")
    category = models.CharField(max_length=16, choices=Category.choices, blank=True, default="")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PERCENT)
    percent = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    amount_per_unit = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="Off each unit the rate is priced in (per-unit discounts)."
    )
    effective_from = models.DateField()
    effective_to = models.DateField(null=True, blank=True, help_text="Inclusive; empty = open-ended.")
    description = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(account__isnull=False) & Q(service__isnull=True))
                | (Q(account__isnull=True) & Q(service__isnull=False)),
                name="billing_discount_account_xor_service",
                violation_error_message="A discount applies to exactly one account or one service.",
            ),
            models.CheckConstraint(
                condition=Q(kind="percent", percent__gt=0, percent__lte=100, amount_per_unit__isnull=True)
                | Q(kind="per_unit", amount_per_unit__gt=0, percent__isnull=True),
                name="billing_discount_amount_valid",
                violation_error_message=(
                    "A percentage discount needs a percent above 0 and at most 100; a per-unit discount an amount "
                    "above 0 (and not the other)."
                ),
            ),
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gte=models.F("effective_from")),
                name="billing_discount_range_valid",
            ),
        ]

    def __str__(self):
        amount = f"{self.percent}%" if self.kind == self.Kind.PERCENT else f"{self.amount_per_unit}/unit"
        return f"{amount} {self.category or 'all usage'}"


class TaxRule(models.Model):
    """Tax on rated usage: the rule for the record's category, else the default rule."""

    code = models.CharField(max_length=32)
    name = models.CharField(max_length=100)
    percent = models.DecimalField(max_digits=6, decimal_places=3)
    category = models.CharField(max_length=16, choices=Category.choices, blank=True, default="")
    is_default = models.BooleanField(default=False)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["code"], name="billing_taxrule_code_unique"),
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="billing_taxrule_one_default"
            ),
            models.UniqueConstraint(
                fields=["category"], condition=~Q(category=""), name="billing_taxrule_one_per_category"
            ),
            models.CheckConstraint(condition=Q(percent__gte=0, percent__lte=100), name="billing_taxrule_percent_range"),
        ]

    def __str__(self):
        return f"{self.code} {self.percent}%"


class AuditEvent(models.Model):
    """Who changed what, when: written by every service function and admin save."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="User name, or the command or task that acted.")
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=100, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    summary = models.CharField(max_length=300, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="billing_audit_object_idx")]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_type} {self.object_id}"


class Invoice(models.Model):
    """An account's bill for one cycle (the periods of its services that start on `cycle_start`).

    Amounts are integer micro-units like usage records, so the invoice reconciles exactly to the
    rated records it sums. A draft is rebuilt by every Main Billing run of its cycle; finalizing
    gives it a number and marks its periods invoiced, after which it never changes.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FINAL = "final", "Final"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="invoices")
    cycle_start = models.DateField()
    cycle_end = models.DateField()
    number = models.CharField(max_length=32, null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, default="AUD")
    usage_records = models.BigIntegerField(default=0)
    subtotal_micros = models.BigIntegerField(default=0)
    tax_micros = models.BigIntegerField(default=0)
    total_micros = models.BigIntegerField(default=0)
    prepared_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    usage_fingerprint = models.CharField(
        max_length=120,
        blank=True,
        default="",
        editable=False,
        help_text="What the draft was built from: the cycle's records of the account (count, mediated, charge, "
        "tax, highest id). When the usage differs now, the draft is out of date.",
    )

    class Meta:
        ordering = ["-cycle_start", "account"]
        constraints = [
            models.UniqueConstraint(fields=["account", "cycle_start"], name="billing_invoice_one_per_cycle"),
            models.UniqueConstraint(fields=["number"], name="billing_invoice_number_unique"),
            models.CheckConstraint(
                condition=Q(status="draft", number__isnull=True) | Q(status="final", number__isnull=False),
                name="billing_invoice_final_has_number",
            ),
            models.CheckConstraint(
                condition=Q(total_micros=models.F("subtotal_micros") + models.F("tax_micros")),
                name="billing_invoice_total_is_sum",
            ),
        ]

    def __str__(self):
        return f"{self.number or 'Draft'} {self.account.number} {self.cycle_start}"

    @property
    def subtotal(self):
        return Decimal(self.subtotal_micros) / 1_000_000

    @property
    def tax(self):
        return Decimal(self.tax_micros) / 1_000_000

    @property
    def total(self):
        return Decimal(self.total_micros) / 1_000_000


class Charge(models.Model):
    """An invoiceable charge: mediated usage mapped per service and category (and usage type),
    a recurring plan or product price for the cycle (prorated), or a one-time charge."""

    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        AGGREGATE = "aggregate", "Usage (period aggregate)"
        RECURRING = "recurring", "Recurring"
        ONE_TIME = "otc", "One-time"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="charges")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="charges")
    period = models.ForeignKey(SubscriptionPeriod, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    category = models.CharField(max_length=16, choices=Category.choices, blank=True, default="")
    usage_type = models.CharField(max_length=32, blank=True, default="")
    is_credit = models.BooleanField(
        default=False, help_text="Usage credits (negative charges), on a line of their own."
    )
    description = models.CharField(max_length=300)
    records = models.BigIntegerField(default=0, help_text="Usage records summed into the charge.")
    rated_quantity = models.DecimalField(**TOTAL, null=True, blank=True)
    included_quantity = models.DecimalField(**TOTAL, null=True, blank=True)
    days = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Days charged of the cycle (proration).")
    aggregate = models.ForeignKey(
        AggregateCharge, on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    quantity = models.DecimalField(
        max_digits=30, decimal_places=10, null=True, blank=True, help_text="An aggregate's metric, in its unit."
    )
    breakdown = models.JSONField(
        default=list, blank=True, help_text="An aggregate charge's pricing, tier by tier (exact amounts)."
    )
    amount_micros = models.BigIntegerField()
    tax_micros = models.BigIntegerField()

    class Meta:
        ordering = ["invoice", "service", "kind", "category", "usage_type"]
        constraints = [
            # Never twice: a subscription's recurring charge once per invoice, a one-time charge once ever.
            models.UniqueConstraint(
                fields=["invoice", "subscription"], condition=Q(kind="recurring"), name="billing_charge_recurring_once"
            ),
            models.UniqueConstraint(fields=["subscription"], condition=Q(kind="otc"), name="billing_charge_otc_once"),
            models.UniqueConstraint(
                fields=["invoice", "period", "category", "usage_type", "is_credit"],
                condition=Q(kind="usage"),
                name="billing_charge_usage_once",
            ),
            models.UniqueConstraint(
                fields=["invoice", "period", "aggregate"],
                condition=Q(kind="aggregate"),
                name="billing_charge_aggregate_once",
            ),
            models.CheckConstraint(
                condition=Q(kind="usage") | Q(subscription__isnull=False), name="billing_charge_subscription_needed"
            ),
            models.CheckConstraint(
                condition=Q(kind="aggregate", aggregate__isnull=False)
                | (~Q(kind="aggregate") & Q(aggregate__isnull=True)),
                name="billing_charge_aggregate_needed",
            ),
        ]

    def __str__(self):
        return self.description

    @property
    def amount(self):
        return Decimal(self.amount_micros) / 1_000_000

    @property
    def tax(self):
        return Decimal(self.tax_micros) / 1_000_000


class IntegrationClient(models.Model):
    """A system integrating over the API. It acts as its own user (in the "API client" role), so its
    writes are audited under its name; its tokens can be revoked one by one."""

    name = models.CharField(max_length=100)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="integration_client")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["name"], name="billing_client_name_unique")]

    def __str__(self):
        return self.name


class ApiToken(models.Model):
    """A bearer token of an integration client. Only its SHA-256 is stored; the key is shown once."""

    client = models.ForeignKey(IntegrationClient, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=8, help_text="The key's first characters, to tell tokens apart.")
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["key_hash"], name="billing_token_hash_unique")]

    def __str__(self):
        return f"{self.client} {self.prefix}…{' (revoked)' if self.revoked_at else ''}"


class IdempotencyKey(models.Model):
    """A write made with an Idempotency-Key header: the same key and request replay the stored
    response; the same key with another request is refused. `status_code` is empty while the first
    request is still being handled."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="billing_idempotency_key_unique")]

    def __str__(self):
        return self.key
