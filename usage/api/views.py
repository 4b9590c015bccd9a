"""Usage over the API: ingest records, files, usage records, quarantine, rebalance."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.errors import Conflict, PayloadTooLarge
from billing.api.filters import UtcIsoDateTimeFilter
from billing.api.idempotency import IDEMPOTENCY_PARAMETER, idempotent
from billing.models import Account, Service
from console.tracking import RunBusy
from usage import selectors, services
from usage.exports import streaming_csv
from usage.models import FileRecord, MediationFile, QuarantinedRecord, UsageCollector, UsageRecord
from usage.rebalance import do_rebalance, do_run_rebalance

from . import serializers


def max_records() -> int:
    return int(getattr(settings, "TOLLGATE_API_MAX_RECORDS", 10_000))


def money(micros):
    """Micro-units as the API writes money (DecimalField's six places), without a field per value."""
    if micros is None:
        return None
    sign = "-" if micros < 0 else ""
    whole, part = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{part:06d}"


def outcomes(mediation_file):
    """Each record's outcome, in line order (the reply to an ingest)."""
    rows = FileRecord.objects.filter(file=mediation_file).order_by("line_no")
    return [
        {
            "line": line,
            "record_id": record_id,
            "status": status_,
            "reason": reason,
            "message": message,
            "charge": money(charge),
            "tax": money(tax),
        }
        for line, record_id, status_, reason, message, charge, tax in rows.values_list(
            "line_no", "record_id", "status", "reason", "message", "charge_micros", "tax_micros"
        )
    ]


class CollectorViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = UsageCollector.objects.all()
    serializer_class = serializers.CollectorSerializer
    lookup_field = "code"
    filterset_fields = ["is_active"]

    @extend_schema(
        request=serializers.IngestSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: serializers.IngestReplySerializer,
            202: serializers.MediationFileSerializer,
            409: OpenApiResponse(description="The same batch was received before, or the key was reused."),
            413: OpenApiResponse(description="More records than the maximum."),
        },
        description="Mediate a batch of records (at most TOLLGATE_API_MAX_RECORDS, 10,000 by default) through "
        "the same gates as files; the reply has each record's outcome. 202 when another worker holds the "
        "collector's queue: follow the file.",
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def ingest(self, request, code=None):
        collector = self.get_object()
        records = request.data.get("records") if isinstance(request.data, dict) else None
        if isinstance(records, list) and len(records) > max_records():
            raise PayloadTooLarge(f"At most {max_records()} records per request; this one has {len(records)}.")
        batch = serializers.validate_batch(request.data)
        try:
            received = services.do_ingest_records(request.user, collector, batch)
        except services.DuplicateFile as exc:
            raise Conflict(" ".join(exc.messages)) from exc
        if received.status == MediationFile.Status.REJECTED:
            raise ValidationError({"records": [received.error]})
        if received.status == MediationFile.Status.FAILED:
            # Kept as a file and queued again: a worker resumes it after its last committed batch.
            services.do_requeue_files(request.user, MediationFile.objects.filter(pk=received.pk))
            received.refresh_from_db()
        if received.status in (MediationFile.Status.QUEUED, MediationFile.Status.PROCESSING):
            return Response(serializers.MediationFileSerializer(received).data, status=status.HTTP_202_ACCEPTED)
        reply = {**serializers.MediationFileSerializer(received).data, "outcomes": outcomes(received)}
        return Response(reply, status=status.HTTP_201_CREATED)


class MediationFileViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = MediationFile.objects.select_related("collector")
    serializer_class = serializers.MediationFileSerializer
    filterset_fields = {"collector__code": ["exact"], "status": ["exact"]}

    def get_parsers(self):
        if getattr(self, "action", None) == "create":
            return [MultiPartParser()]
        return super().get_parsers()

    @extend_schema(
        request={"multipart/form-data": serializers.FileUploadSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: serializers.MediationFileSerializer, 409: OpenApiResponse(description="Same content before.")},
    )
    @idempotent
    def create(self, request, *args, **kwargs):
        size = int(request.META.get("CONTENT_LENGTH") or 0)
        if size > services.max_upload_bytes() + (1 << 20):
            raise PayloadTooLarge(services.upload_too_large_message(size))
        upload = serializers.FileUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        if data["file"].size > services.max_upload_bytes():
            raise PayloadTooLarge(services.upload_too_large_message(data["file"].size))
        try:
            received = services.do_receive_file(
                request.user, data["collector"], data["file"].name, data["file"], via="api"
            )
        except services.DuplicateFile as exc:
            raise Conflict(" ".join(exc.messages)) from exc
        return Response(serializers.MediationFileSerializer(received).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="response")
    def response_file(self, request, pk=None):
        mediation_file = self.get_object()
        return streaming_csv(selectors.response_rows(mediation_file), f"file-{mediation_file.pk}.response.csv")


class UsageRecordFilter(filters.FilterSet):
    service = filters.CharFilter(field_name="service__service_id", help_text="Service ID.")
    account = filters.CharFilter(field_name="account__number", help_text="Account number.")
    usage_from = UtcIsoDateTimeFilter(field_name="usage_at", lookup_expr="gte")
    usage_to = UtcIsoDateTimeFilter(field_name="usage_at", lookup_expr="lt")

    class Meta:
        model = UsageRecord
        fields = ["identifier", "period", "category", "status", "reason", "collector", "file"]


class UsageRecordViewSet(viewsets.ReadOnlyModelViewSet):
    """Mediated usage records, newest first by cursor: a page never counts the table. The records
    that did not pass a gate are the quarantine's (`/quarantine/`)."""

    queryset = UsageRecord.objects.all()
    serializer_class = serializers.UsageRecordSerializer
    filterset_class = UsageRecordFilter


class QuarantineFilter(UsageRecordFilter):
    class Meta:
        model = QuarantinedRecord
        fields = ["identifier", "period", "category", "reason", "stage", "collector", "file"]


class QuarantineViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = QuarantinedRecord.objects.filter(status=QuarantinedRecord.Status.QUARANTINED)
    serializer_class = serializers.QuarantinedRecordSerializer
    filterset_class = QuarantineFilter

    @extend_schema(
        request=serializers.ReprocessSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: OpenApiTypes.OBJECT, 202: OpenApiTypes.OBJECT},
        description="Reprocess quarantined records chosen by ids or by reason, stage, collector, file. Up to "
        "10,000 ids are reprocessed in the request (200 with the outcome); a filter is queued as a "
        "Reprocess run for a worker (202).",
    )
    @action(detail=False, methods=["post"])
    @idempotent
    def reprocess(self, request):
        chosen = serializers.ReprocessSerializer(data=request.data)
        chosen.is_valid(raise_exception=True)
        data = dict(chosen.validated_data)
        if "collector" in data:
            data["collector"] = data["collector"].pk
        if "file" in data:
            data["file"] = data["file"].pk
        if "ids" in data and len(data["ids"]) <= 10_000:
            try:
                run, outcome = services.do_reprocess_now(request.user, data)
            except RunBusy as exc:
                raise Conflict(str(exc)) from exc
            return Response({"run": run.pk, **outcome})
        run = services.queue_reprocess(request.user, data)
        return Response({"run": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)


class RebalanceView(APIView):
    @extend_schema(
        request=serializers.RebalanceSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: serializers.RebalanceResultSerializer},
        description="Re-rate an account's cycle in time order: a dry run (the diff, nothing written) or apply.",
    )
    @idempotent
    def post(self, request):
        asked = serializers.RebalanceSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        data = asked.validated_data
        account = get_object_or_404(Account, number=data["account"])
        service = None
        if data.get("service"):
            service = Service.objects.filter(account=account, service_id=data["service"]).first()
            if service is None:
                raise ValidationError({"service": [f"Account {account.number} has no service {data['service']}."]})
        try:
            if data["apply"]:
                result = do_run_rebalance(
                    request.user, account, data["date"], service=service, category=data["category"]
                )
            else:
                result = do_rebalance(
                    request.user, account, data["date"], service=service, category=data["category"], dry_run=True
                )
        except RunBusy as exc:
            raise Conflict(str(exc)) from exc
        body = {
            "applied": result.applied,
            "records": result.records,
            "changed": result.changed,
            "old_total": result.old_total,
            "new_total": result.new_total,
            "run": result.run.pk if result.run else None,
            "lines": [
                {
                    "id": line.id,
                    "record_id": line.record_id,
                    "usage_at": line.usage_at,
                    "category": line.category,
                    "old_status": line.old_status,
                    "new_status": line.new_status,
                    "old_charge": line.old_charge,
                    "new_charge": line.new_charge,
                    "old_included": line.old_included,
                    "new_included": line.new_included,
                }
                for line in result.lines
            ],
        }
        return Response(serializers.RebalanceResultSerializer(body).data)
