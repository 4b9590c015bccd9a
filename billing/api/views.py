"""Provisioning over the API: accounts, services, identifiers, subscriptions, periods; invoices read."""

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.models import Account, Invoice, Service, ServiceIdentifier, Subscription, SubscriptionPeriod

from . import serializers
from .viewsets import AuditedModelViewSet


class AccountViewSet(AuditedModelViewSet):
    queryset = Account.objects.all()
    serializer_class = serializers.AccountSerializer
    filterset_fields = ["number", "status"]


class ServiceViewSet(AuditedModelViewSet):
    queryset = Service.objects.select_related("account")
    serializer_class = serializers.ServiceSerializer
    filterset_fields = {"service_id": ["exact"], "sub_id": ["exact"], "status": ["exact"], "account__number": ["exact"]}


class ServiceIdentifierViewSet(AuditedModelViewSet):
    queryset = ServiceIdentifier.objects.select_related("service")
    serializer_class = serializers.ServiceIdentifierSerializer
    filterset_fields = {"value": ["exact"], "service__service_id": ["exact"]}


class SubscriptionViewSet(AuditedModelViewSet):
    queryset = Subscription.objects.select_related("service")
    serializer_class = serializers.SubscriptionSerializer
    filterset_fields = {"service__service_id": ["exact"], "plan": ["exact"], "product": ["exact"]}


class SubscriptionPeriodFilter(filters.FilterSet):
    class Meta:
        model = SubscriptionPeriod
        fields = {"service__service_id": ["exact"], "status": ["exact"], "start_date": ["exact", "gte", "lte"]}


class SubscriptionPeriodViewSet(AuditedModelViewSet):
    queryset = SubscriptionPeriod.objects.select_related("service__account")
    serializer_class = serializers.SubscriptionPeriodSerializer
    filterset_class = SubscriptionPeriodFilter

    @extend_schema(
        responses=serializers.AggregateUsageSerializer(many=True),
        description="Current usage: each aggregate charge of the period, its quantity so far and the amount it "
        "would be charged now (priced as Main Billing will price it).",
    )
    @action(detail=True, methods=["get"], url_path="aggregate-usage", filterset_class=None, pagination_class=None)
    def aggregate_usage(self, request, pk=None):
        from billing.aggregates import period_aggregates

        period = self.get_object()
        lines, _stale = period_aggregates([period.pk])
        currency = period.service.account.currency
        for line in lines:
            line.currency = currency
        return Response(serializers.AggregateUsageSerializer(lines, many=True).data)


class InvoiceViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Invoice.objects.select_related("account")
    serializer_class = serializers.InvoiceSerializer
    filterset_fields = {"account__number": ["exact"], "cycle_start": ["exact"], "status": ["exact"]}
