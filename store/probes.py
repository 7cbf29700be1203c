"""Indirect probes, the second opinion of failure detection (:mod:`kvcheck.store.membership`).

A node that suspects a member asks a helper to probe it (:meth:`ProbeRelay.ask`). The helper
relays: it sends the suspect a ``Probe`` and reports to the asker whether a ``ProbeAck`` came
back within ``probe_timeout_ms`` (``ProbeResult``); a probe that surely was not delivered is
reported unreachable at once. Any node answers a ``Probe`` with a ``ProbeAck``. What the asker
concludes from the result is the membership's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvcheck.store.context import Context
from kvcheck.store.events import Action, CancelTimer, ProbeTimeout, Send, StartTimer
from kvcheck.store.ids import ProbeId
from kvcheck.store.messages import Probe, ProbeAck, ProbeRequest, ProbeResult


@dataclass(frozen=True, slots=True)
class _Relayed:
    asker: str
    request: int  # the asker's id for its ProbeRequest
    target: str


class ProbeRelay:
    """The probes this node sends for others, by id."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self._relayed: dict[ProbeId, _Relayed] = {}

    def ask(self, helper: str, suspect: str, out: list[Action]) -> None:
        """Ask ``helper`` to probe ``suspect`` for this node."""
        out.append(Send(helper, ProbeRequest(self._context.ids.probe(), suspect)))

    def relay(self, asker: str, request: ProbeRequest, out: list[Action]) -> None:
        """Probe ``request.target`` for ``asker``."""
        probe = self._context.ids.probe()
        self._relayed[probe] = _Relayed(asker, request.request, request.target)
        out.append(Send(request.target, Probe(probe)))
        out.append(StartTimer(ProbeTimeout(probe), self._context.cluster.probe_timeout_ms / 1000))

    def answer(self, peer: str, probe: Probe, out: list[Action]) -> None:
        """Someone probes this node: it is reachable."""
        out.append(Send(peer, ProbeAck(probe.request)))

    def answered(self, probe: ProbeId, reachable: bool, out: list[Action]) -> None:
        """A probe sent for someone else got an answer (or surely never will): report it. A
        probe already reported is ignored."""
        relayed = self._relayed.pop(probe, None)
        if relayed is not None:
            out.append(CancelTimer(ProbeTimeout(probe)))
            out.append(Send(relayed.asker, ProbeResult(relayed.request, relayed.target,
                                                       reachable)))
