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


def positive_int(text: str) -> int:
    """A whole number above zero. Raises argparse.ArgumentTypeError otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def shard_option(text: str) -> tuple[int, int]:
    """``I/N`` (the I-th of N parts, I from 0) as ``(I, N)``. Raises
    argparse.ArgumentTypeError otherwise."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"must be I/N with 0 <= I < N, not {text!r}")
    return int(index), int(count)


def node_values(text: str) -> tuple[tuple[str, str], ...]:
    """``n1=a,n2=b`` as ``(("n1", "a"), ("n2", "b"))``. Raises argparse.ArgumentTypeError for
    an item without ``=``, a node or a value, or a node named twice."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, equals, value = (part.strip() for part in item.partition("="))
        if not (equals and node and value):
            raise argparse.ArgumentTypeError(f"expected NODE=VALUE, not {item!r}")
        pairs.append((node, value))
    nodes = [node for node, _ in pairs]
    if twice := sorted({node for node in nodes if nodes.count(node) > 1}):
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} named twice")
    return tuple(pairs)


def node_weights(text: str) -> tuple[tuple[str, int], ...]:
    """``n1=2,n2=1`` as ``(("n1", 2), ("n2", 1))``. Raises argparse.ArgumentTypeError for a
    weight that is not a whole number (see :func:`node_values`)."""
    pairs = node_values(text)
    if bad := [value for _, value in pairs if not value.isdigit()]:
        raise argparse.ArgumentTypeError(f"a weight is a whole number, not {bad[0]!r}")
    return tuple((node, int(value)) for node, value in pairs)
