from django.urls import path

from . import views

app_name = "console"
urlpatterns = [
    path("collectors/", views.collectors, name="collectors"),
    path("collectors/<int:collector_id>/history/", views.collector_history, name="collector_history"),
    path("streams/<int:stream_id>/meters/", views.stream_meters, name="stream_meters"),
    path("files/<int:file_id>/response.csv", views.response_file, name="response_file"),
    path("services/<int:service_id>/usage/", views.service_usage, {"kind": "usage"}, name="service_usage"),
    path(
        "services/<int:service_id>/equipment-usage/",
        views.service_usage,
        {"kind": "equipment"},
        name="service_equipment_usage",
    ),
]
