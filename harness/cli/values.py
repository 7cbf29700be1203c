"""Argument value types several ``kvcheck`` commands share; light to import, as ``kvcheck
check`` loads nothing of the harness it does not use."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    """A number above zero. Raises argparse.ArgumentTypeError otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def shard_option(text: str) -> tuple[int, int]:
    """``I/N`` (the I-th of N parts, I from 0) as ``(I, N)``. Raises
    argparse.ArgumentTypeError otherwise."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"must be I/N with 0 <= I < N, not {text!r}")
    return int(index), int(count)
