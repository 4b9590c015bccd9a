"""The integration API, /api/v1/: one router over every app's viewsets, its schema and docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from billing.api import views as billing
from console.api import views as console
from metering.api import views as metering
from usage.api import views as usage

router = DefaultRouter()
router.register("accounts", billing.AccountViewSet)
router.register("services", billing.ServiceViewSet)
router.register("service-identifiers", billing.ServiceIdentifierViewSet)
router.register("subscriptions", billing.SubscriptionViewSet)
router.register("subscription-periods", billing.SubscriptionPeriodViewSet)
router.register("invoices", billing.InvoiceViewSet)
router.register("collectors", usage.CollectorViewSet)
router.register("files", usage.MediationFileViewSet)
router.register("usage-records", usage.UsageRecordViewSet, basename="usagerecord")
router.register("quarantine", usage.QuarantineViewSet, basename="quarantine")
router.register("processes", console.ProcessRunViewSet)
router.register("meter-types", metering.MeterTypeViewSet)
router.register("meters", metering.MeterViewSet)
router.register("meter-readings", metering.MeterReadingViewSet)

urlpatterns = [
    path("", include(router.urls)),
    path("rebalance/", usage.RebalanceView.as_view(), name="rebalance"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
]
