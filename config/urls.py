from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.generic import RedirectView

# A toll gate's barrier, drawn inline: no static file to collect and no 404 on every page.
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#417690"/>'
    '<rect x="4" y="8" width="4" height="20" fill="#fff"/>'
    '<rect x="8" y="12" width="21" height="5" fill="#f5dd5d"/>'
    '<rect x="13" y="12" width="4" height="5" fill="#c00"/><rect x="21" y="12" width="4" height="5" fill="#c00"/>'
    "</svg>"
)


@cache_control(max_age=86400, public=True)
def favicon(request):
    return HttpResponse(FAVICON, content_type="image/svg+xml")


admin.site.site_header = "Tollgate back-office"
admin.site.site_title = "Tollgate"
admin.site.index_title = "Usage mediation, metering and rating"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("favicon.ico", favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("console/", include("console.urls")),
    path("api/v1/", include(("config.api_urls", "api"))),
]
