"""Refuse what no page can answer: a NUL byte in the query string (PostgreSQL cannot compare text
with NUL, so any filter or search given one would fail deep in a query)."""

from django.http import HttpResponseBadRequest


class RefuseNulInQuery:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query or "\x00" in request.path:
            return HttpResponseBadRequest(
                "The address contains a NUL byte (%00), which no parameter may hold.", content_type="text/plain"
            )
        return self.get_response(request)
