"""The store's HTTP conventions, shared by the server and the client.

- ``GET /kv/{key}``: ``200`` with the value when one version is live; ``404`` when there is none
  (or only tombstones); ``300 Multiple Choices`` with a ``multipart/mixed`` body of every sibling
  when there are several (a tombstone sibling is an empty part marked ``X-Kv-Deleted: true``).
- ``PUT /kv/{key}`` (body = value) and ``DELETE /kv/{key}``: ``204`` when W replicas stored it.
- The causal context travels in ``X-Kv-Context``: returned by reads and writes, sent with writes.
- Query ``r`` and ``w`` override the cluster's quorums for one request (1..N).
- Errors are JSON ``{"error": "..."}``; a ``503`` also says ``"applied": "no"`` (surely not
  written) or ``"unknown"`` (indeterminate), mirrored in the ``X-Kv-Applied`` header.

Keys are the percent-decoded path after ``/kv/``: any bytes, at least one.
"""

from __future__ import annotations

import secrets

CONTEXT_HEADER = "x-kv-context"
APPLIED_HEADER = "x-kv-applied"
DELETED_HEADER = "x-kv-deleted"


class MultipartError(ValueError):
    """A sibling body that does not follow the format :func:`encode_siblings` writes."""


def encode_siblings(values: list[bytes | None]) -> tuple[str, bytes]:
    """``(content type, body)`` of a multipart/mixed body, one part per sibling.

    A part is ``Content-Type: application/octet-stream`` and the raw value, or
    ``X-Kv-Deleted: true`` and nothing for a tombstone. The boundary occurs in no value.
    """
    boundary = secrets.token_hex(12)
    while any(v is not None and boundary.encode() in v for v in values):
        boundary = secrets.token_hex(12)
    delimiter = b"--" + boundary.encode()
    parts = []
    for value in values:
        if value is None:
            parts.append(delimiter + f"\r\n{DELETED_HEADER}: true\r\n\r\n".encode())
        else:
            parts.append(delimiter + b"\r\ncontent-type: application/octet-stream\r\n\r\n"
                         + value)
    body = b"\r\n".join(parts) + b"\r\n" + delimiter + b"--\r\n"
    return f"multipart/mixed; boundary={boundary}", body


def decode_siblings(content_type: str, body: bytes) -> list[bytes | None]:
    """Parse :func:`encode_siblings`' output. Raises :class:`MultipartError`."""
    media, _, params = content_type.partition(";")
    boundary = ""
    for param in params.split(";"):
        attribute, _, setting = param.strip().partition("=")
        if attribute.lower() == "boundary":
            boundary = setting.strip('"')
    if media.strip().lower() != "multipart/mixed" or not boundary:
        raise MultipartError(f"expected multipart/mixed with a boundary, got {content_type!r}")
    delimiter = b"--" + boundary.encode()
    end = body.rfind(b"\r\n" + delimiter + b"--")
    if not body.startswith(delimiter) or end < 0:
        raise MultipartError("body does not start and end with the boundary")
    values: list[bytes | None] = []
    for part in body[len(delimiter):end].split(b"\r\n" + delimiter):
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("part without headers")
        headers = {
            name.strip().lower(): v.strip()
            for name, _, v in (line.partition(b":") for line in head.split(b"\r\n") if line)
        }
        values.append(None if headers.get(DELETED_HEADER.encode()) == b"true" else value)
    return values
