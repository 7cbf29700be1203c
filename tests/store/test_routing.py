"""Ids and routing: a reply or a timer reaches the part that owns its id, and one for an id no
part holds (unknown, finished, of no kind) is ignored and counted as late, as it always was."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvcheck.store.config import ClusterConfig
from kvcheck.store.ids import KINDS, REPAIR_REQUEST, Ids, Kind, kind_of
from kvcheck.store.messages import (
    Message,
    ProbeAck,
    ReadReply,
    Rejected,
    ReplicateAck,
    StampReply,
    StreamBatch,
    TreeLevel,
)
from kvcheck.store.node import (
    Action,
    ClientPut,
    Event,
    Node,
    Now,
    ProbeTimeout,
    PullTimeout,
    Received,
    RequestTimeout,
    Respond,
    Send,
    StartTimer,
    TimerFired,
    Written,
)
from kvcheck.store.sim import Simulation
from kvcheck.store.versions import Dot

NODES = ["n1", "n2", "n3"]
NOW = Now(1.0, 1_700_000_001_000)


def started(config: ClusterConfig | None = None) -> Node:
    """Node n1 of a three-node cluster, started, with nothing in flight."""
    node = Simulation(NODES, config).nodes["n1"].logic
    node.start(Now(0.0, 1_700_000_000_000))
    return node


def received(node: Node, message: Message, peer: str = "n2") -> list[Action]:
    return node.handle(Received(peer, message), NOW)


# -- ids ----------------------------------------------------------------------------------------


def test_each_kind_of_id_is_recoverable_from_the_id_alone_and_ids_never_repeat() -> None:
    ids = Ids()
    minted = [(Kind.REQUEST, ids.request()), (Kind.PROBE, ids.probe()),
              (Kind.HANDOFF, ids.handoff()), (Kind.PULL, ids.pull()),
              (Kind.SESSION, ids.session()), (Kind.REQUEST, ids.request())]
    assert [kind_of(id) for _, id in minted] == [kind for kind, _ in minted]
    assert len({id for _, id in minted}) == len(minted)
    assert REPAIR_REQUEST not in {id for _, id in minted}


@given(st.integers(-(2**63), 2**64))
def test_any_int_from_the_wire_has_a_kind_or_none(id: int) -> None:
    kind = kind_of(id)
    assert kind is None or (id > 0 and id % KINDS == kind)
    assert kind_of(REPAIR_REQUEST) is None


# -- replies and timers for ids no part holds ---------------------------------------------------


def test_acknowledgements_for_ids_no_part_holds_are_late_and_change_nothing() -> None:
    node, ids = started(), Ids()
    for request in (ids.request(), ids.handoff(), ids.probe(), ids.session(), ids.pull(),
                    6, 7, -8):
        assert received(node, ReplicateAck(request)) == []
    assert node.counters["late_replies"] == 8
    assert received(node, ReplicateAck(REPAIR_REQUEST)) == []
    assert node.counters["repairs_acked"] == 1
    assert node.coordinator.in_flight == 0


def test_replies_for_requests_pulls_and_sessions_no_part_holds_are_late() -> None:
    node, ids = started(), Ids()
    assert received(node, ReadReply(ids.request(), ())) == []
    assert received(node, StreamBatch(ids.pull(), (), None)) == []
    assert received(node, TreeLevel("n1", ids.session(), 1, ((0, b"\0" * 16),))) == []
    assert node.counters["late_replies"] == 3


def test_refusals_probe_answers_and_timers_for_ids_no_part_holds_do_nothing() -> None:
    node, ids = started(), Ids()
    events: list[Event] = [Received("n2", Rejected(id, "disk full"))
                           for id in (ids.request(), ids.handoff(), ids.pull(), REPAIR_REQUEST)]
    events += [Received("n2", ProbeAck(ids.probe())),
               TimerFired(RequestTimeout(ids.request())), TimerFired(ProbeTimeout(ids.probe())),
               TimerFired(PullTimeout(ids.pull()))]
    for event in events:
        assert node.handle(event, NOW) == []
    assert node.counters == {}


def test_a_late_stamp_is_counted_and_spread_to_the_keys_other_replicas() -> None:
    node = started(ClusterConfig(n=3))
    actions = received(node, StampReply(Ids().request(), b"k", Dot("n2.1", 1), ()))
    assert node.counters["late_replies"] == 1
    assert node.counters["late_stamps_spread"] == 1
    assert sorted(a.peer for a in actions if isinstance(a, Send)) == ["n3"]  # n1 merges itself


def test_a_finished_request_ignores_its_late_replies() -> None:
    node = started(ClusterConfig(n=3, w=3, sloppy_quorum=False))
    actions = node.handle(ClientPut(1, b"k", b"v"), NOW)
    timer = next(a.timer for a in actions if isinstance(a, StartTimer))
    assert isinstance(timer, RequestTimeout) and kind_of(timer.request) is Kind.REQUEST
    answers = [a for peer in ("n2", "n3")
               for a in received(node, ReplicateAck(timer.request), peer)]
    assert [type(a.response) for a in answers if isinstance(a, Respond)] == [Written]
    assert node.coordinator.in_flight == 0
    assert received(node, ReplicateAck(timer.request), "n2") == []
    assert node.handle(TimerFired(timer), NOW) == []
    assert node.counters["late_replies"] == 1
