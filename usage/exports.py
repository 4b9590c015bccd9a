"""CSV downloads streamed row by row (response files, usage exports): nothing held in memory."""

import csv

from django.http import StreamingHttpResponse


class _Echo:
    def write(self, value):
        return value


def streaming_csv(rows, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in rows), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename.replace(chr(34), "")}"'
    return response
