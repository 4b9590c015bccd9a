"""CSV downloads streamed row by row (response files, usage exports): nothing held in memory."""

import csv
import re

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Echo:
    def write(self, value):
        return value


def streaming_csv(rows, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in rows), content_type="text/csv")
    response["Content-Disposition"] = content_disposition_header(True, download_name(filename))
    return response


def download_name(name: str) -> str:
    """A file name safe in a header: control characters (a newline in a service id or an uploaded
    file's name) become '_', slashes '-', and what is not ASCII is percent-encoded by the header."""
    return CONTROL.sub("_", name).replace("/", "-").replace("\\", "-").strip() or "download.csv"
