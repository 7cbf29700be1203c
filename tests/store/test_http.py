"""The sibling body format: any values, including ones that look like the boundary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcheck.store.http import MultipartError, decode_siblings, encode_siblings


@given(st.lists(st.none() | st.binary(max_size=64) | st.just(b"\r\n--\r\n\r\n"), min_size=1,
                max_size=6))
def test_siblings_round_trip(values: list[bytes | None]) -> None:
    assert decode_siblings(*encode_siblings(values)) == values


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", b""),
    ("multipart/mixed", b"--x\r\n\r\nv\r\n--x--\r\n"),
    ("multipart/mixed; boundary=x", b"no boundary here"),
    ("multipart/mixed; boundary=x", b"--x\r\nno blank line\r\n--x--\r\n"),
])
def test_malformed_bodies_are_refused(content_type: str, body: bytes) -> None:
    with pytest.raises(MultipartError):
        decode_siblings(content_type, body)
