from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "Tollgate back-office"
admin.site.site_title = "Tollgate"
admin.site.index_title = "Usage mediation, metering and rating"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("console/", include("console.urls")),
    path("api/v1/", include(("config.api_urls", "api"))),
]
