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
