from decimal import Decimal

from rest_framework import serializers

from billing.models import plain
from usage.gates.parse import FIELDS
from usage.models import QUANTITY, MediationFile, QuarantinedRecord, UsageCollector, UsageRecord

MONEY = {"max_digits": 20, "decimal_places": 6, "read_only": True}


class QuantityField(serializers.DecimalField):
    """A record's quantity in base units as kept, without the trailing zeros of its thousandths:
    "60", "2.5" (a decimal string, like money)."""

    def __init__(self, **options):
        super().__init__(**QUANTITY, read_only=True, allow_null=True, **options)

    def to_representation(self, value):
        return plain(Decimal(value))


def record_key_field(help_text: str):
    return serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=10_000, help_text=help_text
    )


class IngestRecordSerializer(serializers.Serializer):
    """One usage record in Tollgate's field names. Values are checked by the parse gate like a
    file's lines: a bad value quarantines that record (PARSE_ERROR, with the reason); an unknown
    field or a nested value refuses the whole request."""

    record_id = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=10_000)
    identifier = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=10_000)
    start_time = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=10_000, help_text="ISO 8601; UTC without offset."
    )
    duration = serializers.CharField(required=False, allow_blank=True, allow_null=True, help_text="Seconds.")
    volume = serializers.CharField(required=False, allow_blank=True, allow_null=True, help_text="Bytes.")
    quantity = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    destination = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=10_000)
    usage_type = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=10_000)
    amount = serializers.CharField(required=False, allow_blank=True, allow_null=True, help_text="Pre-priced amount.")
    corrects = record_key_field("The key of an earlier record of the collector this record replaces (docs/rating.md).")
    cancels = record_key_field("The key of an earlier record of the collector this record cancels.")


# The request body as the schema documents it. `validate_batch` checks it instead: a thousand
# records through DRF fields took 40 ms a batch, a quarter of mediating them.
class IngestSerializer(serializers.Serializer):
    records = IngestRecordSerializer(many=True, allow_empty=False)


SCALARS = (str, int, float)
MAX_VALUE_CHARS = 10_000


def validate_batch(data) -> list[dict]:
    """The records of a request body, as {field: value or None}; errors shaped like DRF's
    (`{"records": [{}, {"field": ["message"]}, ...]}`), so one bad record is named by position."""
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise serializers.ValidationError({"records": ["A list of records is required."]})
    if not records:
        raise serializers.ValidationError({"records": ["This list may not be empty."]})
    errors, any_error = [], False
    for record in records:
        problems = {}
        if not isinstance(record, dict):
            problems["non_field_errors"] = ["A record is an object of field names and values."]
        else:
            for name, value in record.items():
                if name not in FIELDS:
                    problems[name] = ["Unknown field."]
                elif value is not None and (isinstance(value, bool) or not isinstance(value, SCALARS)):
                    problems[name] = ["Not a valid string or number."]
                elif isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
                    problems[name] = [f"Ensure this field has no more than {MAX_VALUE_CHARS} characters."]
        errors.append(problems)
        any_error = any_error or bool(problems)
    if any_error:
        raise serializers.ValidationError({"records": errors})
    return [{k: v for k, v in record.items() if v is not None} for record in records]


class OutcomeSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    record_id = serializers.CharField()
    status = serializers.CharField()
    reason = serializers.CharField()
    message = serializers.CharField()
    charge = serializers.DecimalField(**MONEY, allow_null=True)
    tax = serializers.DecimalField(**MONEY, allow_null=True)


class CollectorSerializer(serializers.ModelSerializer):
    class Meta:
        model = UsageCollector
        fields = [
            "id",
            "code",
            "name",
            "supplier",
            "format",
            "is_active",
            "late_usage_policy",
            "multiline_fields",
            "accept_negative",
            "fraction_rounding",
            "max_duration_seconds",
            "max_volume_bytes",
            "max_quantity",
            "max_amount",
        ]
        read_only_fields = fields


class MediationFileSerializer(serializers.ModelSerializer):
    collector = serializers.SlugRelatedField(slug_field="code", read_only=True)
    charge = serializers.DecimalField(**MONEY)
    tax = serializers.DecimalField(**MONEY)

    class Meta:
        model = MediationFile
        fields = [
            "id",
            "collector",
            "sequence",
            "name",
            "sha256",
            "size",
            "uploaded_via",
            "uploaded_at",
            "status",
            "error",
            "started_at",
            "finished_at",
            "total_lines",
            "mediated",
            "quarantined",
            "duplicates",
            "rejected_lines",
            "blank_lines",
            "pending",
            "void",
            "physical_lines",
            "header_lines",
            "continuation_lines",
            "lines_done",
            "charge",
            "tax",
        ]
        read_only_fields = fields


class IngestReplySerializer(MediationFileSerializer):
    outcomes = OutcomeSerializer(many=True, read_only=True)

    class Meta(MediationFileSerializer.Meta):
        fields = [*MediationFileSerializer.Meta.fields, "outcomes"]
        read_only_fields = fields


class FileUploadSerializer(serializers.Serializer):
    collector = serializers.SlugRelatedField(slug_field="code", queryset=UsageCollector.objects.filter(is_active=True))
    file = serializers.FileField()


class UsageRecordSerializer(serializers.ModelSerializer):
    charge = serializers.DecimalField(**MONEY, allow_null=True)
    tax = serializers.DecimalField(**MONEY, allow_null=True)
    included_amount = serializers.DecimalField(**MONEY)
    duration = QuantityField(help_text="Seconds, exact to the millisecond.")
    volume = QuantityField(help_text="Bytes.")
    quantity = QuantityField()
    rated_quantity = QuantityField(help_text="Base units after increments.")
    included_quantity = QuantityField(help_text="Base units of the rated quantity covered by allowances.")

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "file",
            "collector",
            "line_no",
            "record_id",
            "identifier",
            "usage_at",
            "duration",
            "volume",
            "quantity",
            "destination",
            "usage_type",
            "category",
            "service",
            "account",
            "period",
            "is_late",
            "rate",
            "rated_quantity",
            "included_quantity",
            "included_amount",
            "allowance",
            "discount",
            "charge",
            "tax",
            "stage",
            "status",
            "reason",
            "message",
        ]
        read_only_fields = fields


class QuarantinedRecordSerializer(UsageRecordSerializer):
    class Meta(UsageRecordSerializer.Meta):
        model = QuarantinedRecord


class ReprocessSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), required=False, max_length=100_000
    )
    reason = serializers.ChoiceField(choices=UsageRecord._meta.get_field("reason").choices, required=False)
    stage = serializers.ChoiceField(choices=["identify", "bucket", "rate", "tax"], required=False)
    collector = serializers.SlugRelatedField(slug_field="code", queryset=UsageCollector.objects.all(), required=False)
    file = serializers.PrimaryKeyRelatedField(queryset=MediationFile.objects.all(), required=False)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Choose records: ids, or a reason, stage, collector or file.")
        return attrs


class RebalanceSerializer(serializers.Serializer):
    account = serializers.CharField(help_text="Account number.")
    date = serializers.DateField(help_text="A date in the cycle.")
    service = serializers.CharField(required=False, allow_blank=True, help_text="Only this service ID.")
    category = serializers.ChoiceField(choices=["", "telephony", "data", "misc"], required=False, default="")
    apply = serializers.BooleanField(default=False, help_text="False: a dry run that writes nothing.")


class RebalanceLineSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    record_id = serializers.CharField()
    usage_at = serializers.DateTimeField()
    category = serializers.CharField()
    old_status = serializers.CharField()
    new_status = serializers.CharField()
    old_charge = serializers.DecimalField(**MONEY, allow_null=True)
    new_charge = serializers.DecimalField(**MONEY, allow_null=True)
    old_included = serializers.IntegerField(allow_null=True)
    new_included = serializers.IntegerField(allow_null=True)


class RebalanceResultSerializer(serializers.Serializer):
    applied = serializers.BooleanField()
    records = serializers.IntegerField()
    changed = serializers.IntegerField()
    old_total = serializers.DecimalField(**MONEY)
    new_total = serializers.DecimalField(**MONEY)
    run = serializers.IntegerField(allow_null=True)
    lines = RebalanceLineSerializer(many=True)
