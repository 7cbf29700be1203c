"""Faults made by shell commands on a node — in a container's namespace or on a host over SSH:
the commands both backends run, and the faults made of them (:class:`ShellFaults`), in one
place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvcheck.harness.backend import BackendError
from kvcheck.harness.databases import Process
from kvcheck.nemesis import PacketFault, PacketSupport
from kvcheck.nemesis.topology import Link

if TYPE_CHECKING:
    from kvcheck.harness.spec import TestSpec

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


class ShellFaults:
    """Partitions, kills, pauses and packet faults made by shell commands as root on each node
    — the same for a container and for a host. A backend mixes it in and provides
    :meth:`_shell` (run a script on a node), :meth:`_device` (the node's network interface),
    :meth:`_pid_path` (where a process's pid is kept), and the state below."""

    spec: TestSpec
    notes: list[str]  # what the run could not do as asked
    _ips: dict[str, str]  # node -> its address
    _running: dict[str, list[Process]]  # what was started on each node
    _down: set[str]  # nodes whose processes are stopped (killed, left)
    _netem: bool  # whether the nodes' kernel has netem
    _cut_on: set[str]
    _packets_on: set[str]
    _qdisc_on: set[str]
    _delayed: set[str]  # nodes whose packets to other zones are delayed
    #: Where the kernel without netem is, in a message: "this kernel", "a host's kernel".
    _kernel = "this kernel"

    async def _shell(self, node: str, script: str) -> str:
        """Run ``script`` on ``node`` as root; its output. Raises BackendError."""
        raise NotImplementedError

    def _device(self, node: str) -> str:
        """The network interface of ``node`` that reaches the other nodes."""
        raise NotImplementedError

    def _pid_path(self, process: Process) -> str:
        """The file on the node that holds ``process``'s pid."""
        raise NotImplementedError

    async def _qdisc_added(self, node: str) -> None:
        """A queueing discipline was added to ``node``'s interface (for a backend that must
        remember it past its own life)."""

    async def _probe_netem(self, node: str) -> bool:
        """Whether ``node``'s kernel has netem."""
        dev = self._device(node)
        return await self._shell(node, f"tc qdisc add dev {dev} root netem delay 1ms && "
                                       f"tc qdisc del dev {dev} root && echo yes || echo no") \
            == "yes"

    async def _delay_between_zones(self, nodes: Sequence[str]) -> None:
        """Delay the packets ``nodes`` (just set up) send to nodes of other zones, and those
        that earlier nodes of other zones send to them, by ``--zone-latency-ms``
        (:func:`zone_delay_script`). Without netem, the run notes that it cannot."""
        delay_ms = self.spec.zone_latency_ms
        if not delay_ms:
            return
        if not self._netem:
            note = (f"no delay between zones (--zone-latency-ms {delay_ms:g}): "
                    f"{self._kernel} has no netem queueing discipline")
            if note not in self.notes:
                self.notes.append(note)
            return
        zone = self.spec.zone_of
        for node in nodes:
            far = [self._ips[n] for n in self._ips if zone(n) != zone(node)]
            await self._shell(node, zone_delay_script(delay_ms, far, self._device(node)))
            self._delayed.add(node)
            await self._qdisc_added(node)
        for node in sorted(self._delayed - set(nodes)):
            if far := [self._ips[n] for n in nodes if zone(n) != zone(node)]:
                await self._shell(node, " && ".join(delay_filter(ip, self._device(node))
                                                    for ip in far))

    def _faulty(self, node: str) -> list[Process]:
        return [p for p in self._running.get(node, []) if p.faults]

    async def kill(self, node: str) -> None:
        await self._stop(node, "KILL", self._faulty(node))

    async def _stop(self, node: str, signal: str, processes: Sequence[Process]) -> None:
        """Send ``processes`` of ``node`` the ``signal`` and wait until they are gone; the node
        counts as down (its peers need not answer for it, and it has not crashed)."""
        self._down.add(node)
        for process in processes:
            pid = f"$(cat {self._pid_path(process)})"
            await self._shell(node, f"kill -{signal} {pid}; while kill -0 {pid} 2>/dev/null; "
                                    "do sleep 0.05; done")

    async def pause(self, node: str) -> None:
        for process in self._faulty(node):
            await self._shell(node, f"kill -STOP $(cat {self._pid_path(process)})")

    async def resume(self, node: str) -> None:
        for process in self._faulty(node):
            await self._shell(node, f"kill -CONT $(cat {self._pid_path(process)})")

    async def cut(self, links: frozenset[Link]) -> None:
        for node, sources in self._by_receiver(links).items():
            self._cut_on.add(node)
            await self._shell(node, " && ".join(f"iptables -A KVCHECK -s {ip} -j DROP"
                                                for ip in sources))

    async def heal(self, links: frozenset[Link] | None = None) -> None:
        """Delete one rule of each link (``iptables -D`` deletes the first that matches: a
        link two faults cut keeps the other's), or flush every node's chain."""
        if links is not None:
            for node, sources in self._by_receiver(links).items():
                await self._shell(node, " && ".join(f"iptables -D KVCHECK -s {ip} -j DROP"
                                                    for ip in sources))
            return
        for node in sorted(self._cut_on):
            await self._shell(node, "iptables -F KVCHECK")
        self._cut_on.clear()

    def _by_receiver(self, links: frozenset[Link]) -> dict[str, list[str]]:
        """The addresses each node drops packets from, for ``links``."""
        by_receiver: dict[str, list[str]] = {}
        for src, dst in sorted(links):
            by_receiver.setdefault(dst, []).append(self._ips[src])
        return by_receiver

    def packet_support(self) -> PacketSupport:
        if self._netem:
            return PacketSupport(frozenset({"delay", "loss", "duplicate", "reorder", "rate"}))
        return PacketSupport(frozenset({"loss", "rate"}),
                             f"{self._kernel} has no netem qdisc, so packet delay, duplication "
                             "and reordering are not possible there (loss uses iptables' "
                             "statistic match, bandwidth uses tc tbf)")

    async def packet_fault(self, fault: PacketFault) -> None:
        unsupported = fault.effects - self.packet_support().effects
        if unsupported:
            raise BackendError(f"cannot {', '.join(sorted(unsupported))} packets: "
                               + self.packet_support().missing_reason)
        for node in fault.nodes:
            dev = self._device(node)
            if self._netem:
                await self._shell(node, f"tc qdisc add dev {dev} root {netem_args(fault)}")
                self._qdisc_on.add(node)
                await self._qdisc_added(node)
                continue
            if fault.loss:
                await self._shell(node, "iptables -A KVCHECK-OUT -m statistic --mode random "
                                        f"--probability {fault.loss} -j DROP")
                self._packets_on.add(node)
            if fault.rate_kbit:
                await self._shell(node, f"tc qdisc add dev {dev} root tbf rate "
                                        f"{fault.rate_kbit}kbit burst 32kbit latency 400ms")
                self._qdisc_on.add(node)
                await self._qdisc_added(node)

    async def clear_packets(self) -> None:
        for node in sorted(self._packets_on):
            await self._shell(node, "iptables -F KVCHECK-OUT")
        for node in sorted(self._qdisc_on):
            await self._shell(node, f"tc qdisc del dev {self._device(node)} root")
        self._packets_on.clear()
        self._qdisc_on.clear()
