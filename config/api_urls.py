"""The integration API, /api/v1/: one router over every app's viewsets, its schema and docs."""

from django.urls import include, path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from billing.api import views as billing
from console.api import views as console
from metering.api import views as metering
from usage.api import views as usage


class LocalRedocView(SpectacularRedocView):
    """Redoc, with nothing fetched from elsewhere: its bundle hard-codes a logo from Redocly's CDN,
    which this page's Content-Security-Policy keeps the browser from requesting."""

    CSP = (
        "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
    )

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        response["Content-Security-Policy"] = self.CSP
        return response


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
    path("redoc/", LocalRedocView.as_view(url_name="api:schema"), name="redoc"),
]
