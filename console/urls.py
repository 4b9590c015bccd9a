from django.urls import path

from . import views

app_name = "console"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("processes/<str:kind>/", views.process_history, name="process"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/retry/", views.run_retry, name="run_retry"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("billing/start/", views.start_main_billing, name="start_main_billing"),
    path("collectors/", views.collectors, name="collectors"),
    path("collectors/<int:collector_id>/history/", views.collector_history, name="collector_history"),
    path("streams/<int:stream_id>/meters/", views.stream_meters, name="stream_meters"),
    path("files/<int:file_id>/response.csv", views.response_file, name="response_file"),
    path("files/<int:file_id>/retry/", views.file_action, {"action": "retry"}, name="file_retry"),
    path("files/<int:file_id>/skip/", views.file_action, {"action": "skip"}, name="file_skip"),
    path("services/<int:service_id>/usage/", views.service_usage, {"kind": "usage"}, name="service_usage"),
    path("services/<int:service_id>/bolt-ons/", views.service_bolt_ons, name="service_bolt_ons"),
    path(
        "services/<int:service_id>/bolt-ons/<int:subscription_id>/usage/",
        views.service_usage,
        {"kind": "bolt_on"},
        name="service_bolt_on_usage",
    ),
    path(
        "services/<int:service_id>/equipment-usage/",
        views.service_usage,
        {"kind": "equipment"},
        name="service_equipment_usage",
    ),
]
