"""The simulator's network as the real cluster's TCP links behave: in order on each link,
packet faults as TCP shows them (and their backlog released when they end), and peers' links
to a restarted node back only once each peer has reconnected."""

from __future__ import annotations

from kvcheck.store.config import ClusterConfig
from kvcheck.store.messages import Gossip, Message
from kvcheck.store.node import Received, Written
from kvcheck.store.sim import MAX_RECONNECT_S, Degradation, Simulation

NODES = ["n1", "n2", "n3"]


def arrivals(sim: Simulation, source: str, target: str) -> list[tuple[float, Message]]:
    """The messages in flight from ``source`` to ``target``, in the order they arrive."""
    queued = sorted((at, seq, event.message) for at, seq, node, event in sim._queue
                    if node == target and isinstance(event, Received) and event.peer == source)
    return [(at, message) for at, _, message in queued]


def test_messages_on_one_link_never_overtake_each_other() -> None:
    sim = Simulation(NODES, seed=1, latency=(0.001, 0.5))
    sent = [Gossip((), ()) for _ in range(50)]
    for message in sent:
        sim._send("n1", "n2", message)
    in_flight = [message for _, message in arrivals(sim, "n1", "n2")]
    assert [id(m) for m in in_flight] == [id(m) for m in sent]


def test_a_rate_limited_backlog_goes_at_once_when_the_fault_ends() -> None:
    sim = Simulation(NODES, seed=2)
    sim.degrade("n1", Degradation(rate_kbit=8))  # 1 kB/s: a backlog of seconds
    for _ in range(200):
        sim._send("n1", "n2", Gossip((), tuple(sim.configured.records.values())))
    assert arrivals(sim, "n1", "n2")[-1][0] > 10
    sim.restore()
    assert arrivals(sim, "n1", "n2")[-1][0] <= sim.now + sim.latency[1]


def test_packet_loss_delays_messages_by_retransmissions_and_loses_none() -> None:
    sim = Simulation(NODES, seed=3)
    sim.degrade("n1", Degradation(loss=0.5))
    for _ in range(100):
        sim._send("n1", "n2", Gossip((), ()))
    times = [at for at, _ in arrivals(sim, "n1", "n2")]
    assert len(times) == 100 and max(times) >= 0.2


def test_a_restarted_node_is_ready_once_every_peer_has_reconnected() -> None:
    sim = Simulation(NODES, ClusterConfig(n=3, w=3, r=1), seed=4)
    sim.run_for(1)
    sim.crash("n2")
    sim.run_for(5)
    sim.restart("n2")
    assert not sim.connected("n2")
    sim.run_for(MAX_RECONNECT_S)
    assert sim.connected("n2")
    assert isinstance(sim.wait_for(sim.put("n1", b"k", b"v")), Written)  # W=3 reaches n2
