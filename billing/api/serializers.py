"""Provisioning serializers: the model's own rules (clean, constraints, non-overlap) decide, as in
the admin, and their messages come back per field."""

import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from billing.models import Account, Invoice, Service, ServiceIdentifier, Subscription, SubscriptionPeriod

from .errors import validation_detail


class ModelRulesSerializer(serializers.ModelSerializer):
    """Validates by the model's full_clean() on the instance as it would be saved."""

    def validate(self, attrs):
        attrs = super().validate(attrs)
        # A copy of the row as it would be saved (the row itself is only changed by save()).
        instance = copy.copy(self.instance) if self.instance is not None else self.Meta.model()
        for name, value in attrs.items():
            setattr(instance, name, value)
        self.check_transition(instance, attrs)
        try:
            instance.full_clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(validation_detail(exc)) from exc
        return attrs

    def check_transition(self, instance, attrs):
        """Rules about changing an existing row (subclasses)."""


class AccountSerializer(ModelRulesSerializer):
    class Meta:
        model = Account
        fields = ["id", "number", "name", "status", "bill_day", "currency", "created_at"]
        read_only_fields = ["created_at"]


class ServiceSerializer(ModelRulesSerializer):
    account = serializers.SlugRelatedField(slug_field="number", queryset=Account.objects.all())

    class Meta:
        model = Service
        fields = ["id", "account", "service_id", "sub_id", "service_type", "status", "description", "created_at"]
        read_only_fields = ["created_at"]


class ServiceIdentifierSerializer(ModelRulesSerializer):
    service = serializers.SlugRelatedField(slug_field="service_id", queryset=Service.objects.all())

    class Meta:
        model = ServiceIdentifier
        fields = ["id", "service", "kind", "value", "active_from", "active_to"]


class SubscriptionSerializer(ModelRulesSerializer):
    service = serializers.SlugRelatedField(slug_field="service_id", queryset=Service.objects.all())

    class Meta:
        model = Subscription
        fields = ["id", "service", "plan", "product", "starts_on", "ends_on", "quantity"]


class SubscriptionPeriodSerializer(ModelRulesSerializer):
    service = serializers.SlugRelatedField(slug_field="service_id", queryset=Service.objects.all())

    class Meta:
        model = SubscriptionPeriod
        fields = ["id", "service", "start_date", "end_date", "status", "starts_at", "ends_at"]
        read_only_fields = ["starts_at", "ends_at"]

    def check_transition(self, instance, attrs):
        if self.instance is not None and self.instance.status == SubscriptionPeriod.Status.INVOICED:
            if any(getattr(self.instance, k) != v for k, v in attrs.items()):
                raise serializers.ValidationError({"status": ["An invoiced period cannot be changed."]})


class InvoiceSerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="number", read_only=True)
    subtotal = serializers.DecimalField(max_digits=20, decimal_places=6, read_only=True)
    tax = serializers.DecimalField(max_digits=20, decimal_places=6, read_only=True)
    total = serializers.DecimalField(max_digits=20, decimal_places=6, read_only=True)

    class Meta:
        model = Invoice
        fields = [
            "id",
            "account",
            "cycle_start",
            "cycle_end",
            "number",
            "status",
            "currency",
            "usage_records",
            "subtotal",
            "tax",
            "total",
            "prepared_at",
            "finalized_at",
        ]
        read_only_fields = fields


class AggregateUsageSerializer(serializers.Serializer):
    """An aggregate charge of a period so far: its metric and what it would be charged now."""

    charge = serializers.CharField(source="charge.code", help_text="The aggregate charge's code.")
    name = serializers.CharField(source="charge.name")
    charge_model = serializers.CharField(source="charge.charge_model")
    aggregation = serializers.CharField(source="charge.aggregation")
    unit = serializers.CharField(source="charge.unit", help_text="The unit the quantity is in.")
    records = serializers.IntegerField(help_text="Records of the period the charge covers so far.")
    quantity = serializers.CharField(source="priced.quantity", help_text="The metric so far, exact, in `unit`.")
    amount = serializers.DecimalField(
        max_digits=20, decimal_places=2, help_text="What it would be charged now, rounded as the invoice line."
    )
    exact_amount = serializers.CharField(source="priced.amount", help_text="The same, before the line's rounding.")
    currency = serializers.CharField()
    breakdown = serializers.JSONField(source="priced.breakdown", help_text="How it is priced, tier by tier.")
