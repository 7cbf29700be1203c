"""Faults made by shell commands on a node — in a container's namespace or on a host over SSH:
the commands both backends run, in one place."""

from __future__ import annotations

from collections.abc import Sequence

from kvcheck.nemesis import PacketFault

#: kvcheck's own iptables chains, jumped from INPUT (partitions) and OUTPUT (packet loss), so
#: that healing touches nothing else.
CHAINS = ("iptables -N KVCHECK && iptables -I INPUT -j KVCHECK && "
          "iptables -N KVCHECK-OUT && iptables -I OUTPUT -j KVCHECK-OUT")


def zone_delay_script(delay_ms: float, far: Sequence[str], dev: str) -> str:
    """The ``tc`` commands that delay packets to the addresses ``far`` by ``delay_ms``, and
    no others, on interface ``dev``: a ``prio`` root whose fourth band (no traffic class maps
    to it) holds netem, and a filter sending each far address to that band."""
    commands = [f"tc qdisc add dev {dev} root handle 1: prio bands 4 "
                "priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
                f"tc qdisc add dev {dev} parent 1:4 handle 40: netem delay {delay_ms:g}ms"]
    return " && ".join([*commands, *(delay_filter(ip, dev) for ip in far)])


def delay_filter(ip: str, dev: str) -> str:
    """The ``tc`` filter that sends packets to ``ip`` into the delaying band."""
    return f"tc filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip dst {ip}/32 " \
           "flowid 1:4"


def netem_args(fault: PacketFault) -> str:
    """The netem qdisc (``netem delay … loss …``) that makes ``fault``."""
    parts = ["netem"]
    if fault.delay_ms:
        parts.append(f"delay {fault.delay_ms:.0f}ms")
        if fault.jitter_ms:
            parts.append(f"{fault.jitter_ms:.0f}ms")
    if fault.loss:
        parts.append(f"loss {fault.loss * 100:.1f}%")
    if fault.duplicate:
        parts.append(f"duplicate {fault.duplicate * 100:.1f}%")
    if fault.reorder:
        parts.append(f"reorder {fault.reorder * 100:.1f}%")
    if fault.rate_kbit:
        parts.append(f"rate {fault.rate_kbit}kbit")
    return " ".join(parts)
