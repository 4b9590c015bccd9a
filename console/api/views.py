"""Processes over the API: runs with status, progress, ETA and activities; start Main Billing; retry."""

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.api.errors import Conflict
from billing.api.idempotency import IDEMPOTENCY_PARAMETER, idempotent
from console import selectors, tracking
from console.models import ProcessActivity, ProcessKind, ProcessRun


class ActivitySerializer(serializers.ModelSerializer):
    class Meta:
        model = ProcessActivity
        fields = ["position", "name", "status", "started_at", "finished_at", "records", "detail", "error"]
        read_only_fields = fields


class ProcessRunSerializer(serializers.ModelSerializer):
    activities = ActivitySerializer(many=True, read_only=True)
    records_per_second = serializers.IntegerField(read_only=True, allow_null=True)
    progress_percent = serializers.IntegerField(read_only=True, allow_null=True)
    eta = serializers.DateTimeField(read_only=True, allow_null=True, help_text="Estimated completion.")

    class Meta:
        model = ProcessRun
        fields = [
            "id",
            "kind",
            "subject",
            "label",
            "queue",
            "status",
            "waiting_for",
            "step",
            "params",
            "created_at",
            "scheduled_for",
            "started_at",
            "finished_at",
            "records_expected",
            "records_done",
            "records_per_second",
            "progress_percent",
            "eta",
            "error",
            "requested_label",
            "retry_of",
            "activities",
        ]
        read_only_fields = fields


class MainBillingSerializer(serializers.Serializer):
    cycle_start = serializers.DateField(help_text="The first day of the cycle's periods.")
    run_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Empty: now.")
    close_early_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=300,
        help_text="Bill a cycle that has not ended by the run's time: required then, and audited.",
    )


class ProcessRunViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = ProcessRun.objects.prefetch_related("activities")
    serializer_class = ProcessRunSerializer
    filterset_fields = ["kind", "status", "subject"]

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        return selectors.with_estimates(page) if page is not None else None

    def get_object(self):
        return selectors.with_estimates([super().get_object()])[0]

    @extend_schema(
        request=MainBillingSerializer, parameters=[IDEMPOTENCY_PARAMETER], responses={201: ProcessRunSerializer}
    )
    @action(detail=False, methods=["post"], url_path="main-billing")
    @idempotent
    def main_billing(self, request):
        from billing.invoicing import request_main_billing, subject_for

        asked = MainBillingSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        existing = tracking.active_run(ProcessKind.MAIN_BILLING, subject_for(asked.validated_data["cycle_start"]))
        run = request_main_billing(
            request.user,
            asked.validated_data["cycle_start"],
            run_at=asked.validated_data.get("run_at"),
            close_early_reason=asked.validated_data.get("close_early_reason", ""),
        )
        run = selectors.with_estimates([ProcessRun.objects.get(pk=run.pk)])[0]
        code = status.HTTP_200_OK if existing is not None else status.HTTP_201_CREATED
        return Response(ProcessRunSerializer(run).data, status=code)

    @extend_schema(request=None, responses={201: ProcessRunSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        run = super().get_object()
        try:
            new_run = tracking.retry_run(request.user, run)
        except tracking.RunBusy as exc:
            raise Conflict(str(exc)) from exc
        except ValidationError as exc:
            raise Conflict(" ".join(exc.messages)) from exc
        new_run = selectors.with_estimates([ProcessRun.objects.get(pk=new_run.pk)])[0]
        return Response(ProcessRunSerializer(new_run).data, status=status.HTTP_201_CREATED)
