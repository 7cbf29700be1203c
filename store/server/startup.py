"""How a node starts and stops: the cluster's layout it starts from, and serving until a signal."""

from __future__ import annotations

import json
import logging
import signal
from dataclasses import asdict, replace

import trio

from kvcheck.store.client import StoreClient, StoreError
from kvcheck.store.config import ConfigError, NodeConfig
from kvcheck.store.datadir import load_records, record_from_json
from kvcheck.store.placement import Placement, initial_records
from kvcheck.store.ring import Member
from kvcheck.store.server.driver import Server

#: The server's one logger (``kvcheck.store.server``), shared by its modules.
log = logging.getLogger(__package__)


async def placement_for(config: NodeConfig) -> Placement:
    """Where a starting node takes the cluster's layout from: what it saved in its data
    directory; else, with ``--join``, the seed's records plus its own as a joining member;
    else the configured peers. Raises ConfigError."""
    vnodes = config.cluster.vnodes_per_weight
    me = config.me
    saved = load_records(config.data_dir)
    if saved is not None:
        placement = Placement({r.node_id: r for r in saved}, vnodes, config.cluster.n)
        mine = placement.records.get(me.node_id)
        if mine is None:
            raise ConfigError(f"{config.data_dir} has no record of {me.node_id}")
        if (mine.zone, mine.weight) != (me.zone, me.weight):
            raise ConfigError(f"{me.node_id} was a member with zone {mine.zone!r} and weight "
                              f"{mine.weight}; a node cannot change them")
        if mine.address != str(me.address):
            placement = placement.with_record(
                replace(mine, address=str(me.address), version=mine.version + 1))
        return placement
    if config.join is None:
        members = [Member(m.node_id, m.zone, m.weight) for m in config.members]
        addresses = {m.node_id: str(m.address) for m in config.members}
        return Placement(initial_records(members, addresses, vnodes), vnodes, config.cluster.n)
    seed = config.join
    try:
        async with StoreClient(seed.host, seed.port, timeout=5.0) as client:
            theirs = (await client.status())["cluster"]
            raw = await client.placement()
        records = [record_from_json(r) for r in raw]
    except StoreError as exc:
        raise ConfigError(f"cannot join through {seed}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{seed} sent records this node cannot read: {exc}") from None
    ours = json.loads(json.dumps(asdict(config.cluster)))  # as /status shows them
    differ = [f"{name} is {mine!r} here, {theirs.get(name)!r} there"
              for name, mine in ours.items() if theirs.get(name) != mine]
    if differ:
        raise ConfigError(f"this node's cluster settings differ from those of the cluster it "
                          f"joins through {seed}: {'; '.join(differ)}. Every member needs the "
                          f"same settings")
    try:
        return Placement({r.node_id: r for r in records}, vnodes, config.cluster.n).joined(
            me.node_id, str(me.address), me.zone, me.weight)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGINT or SIGTERM, then shut down cleanly."""
    server = Server(config, await placement_for(config))
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(server.run)
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
