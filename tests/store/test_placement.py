"""Placement: two rings from gossiped records, which keys move, who sends them, and how records
merge. Hypothesis properties over random clusters and changes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.store.config import ConfigError
from kvcheck.store.datadir import load_records, save_records
from kvcheck.store.placement import Placement, initial_records
from kvcheck.store.ring import Member

VNODES = 16  # small rings keep the properties fast; the logic does not depend on the count
KEYS = [f"key-{i}".encode() for i in range(300)]


def cluster(size: int, zones: int = 1) -> Placement:
    members = [Member(f"n{i}", f"z{i % zones}") for i in range(1, size + 1)]
    records = initial_records(members, {m.node_id: f"10.0.0.{i}:7000"
                                        for i, m in enumerate(members, 1)}, VNODES)
    return Placement(records, VNODES, 3)


def leaving(placement: Placement, node: str) -> Placement:
    record = placement.records[node]
    return placement.with_record(replace(record, status="leaving", version=record.version + 1))


changes = st.builds(
    lambda size, zones, join, which: (size + (not join), zones, join, which),
    st.integers(3, 7), st.integers(1, 3), st.booleans(), st.integers(0, 7))


def transition(size: int, zones: int, join: bool, which: int) -> tuple[Placement, str]:
    placement = cluster(size, zones)
    if join:
        node = f"n{size + 1}"
        return placement.joined(node, "10.0.1.1:7000", f"z{which % zones}", 1), node
    node = f"n{which % size + 1}"
    return leaving(placement, node), node


def test_a_static_cluster_is_not_in_transition_and_has_one_group_per_key() -> None:
    placement = cluster(4)
    assert not placement.in_transition
    assert placement.gainers == []
    for key in KEYS[:20]:
        assert placement.groups(key) == (placement.current.preference_list(key, 3),)


@settings(max_examples=60, deadline=None)
@given(changes)
def test_a_join_or_leave_swaps_at_most_one_replica_per_key_and_only_the_changer_moves(
        change: tuple[int, int, bool, int]) -> None:
    size, zones, join, which = change
    placement, node = transition(size, zones, join, which)
    assert placement.in_transition and placement.changing() == [node]
    for key in KEYS:
        groups = placement.groups(key)
        old, new = groups[0], groups[-1]
        gained, lost = set(new) - set(old), set(old) - set(new)
        assert len(gained) == len(lost)
        if join:
            assert gained <= {node}
        else:
            assert lost <= {node}
        assert set(gained) <= set(placement.gainers)


@settings(max_examples=60, deadline=None)
@given(changes, st.sets(st.sampled_from([f"n{i}" for i in range(1, 8)]), max_size=2))
def test_every_gained_key_has_a_sender_while_some_current_replica_is_reachable(
        change: tuple[int, int, bool, int], unreachable: set[str]) -> None:
    """Losers send; for a loser the gainer cannot reach, every other current replica does."""
    size, zones, join, which = change
    placement, _ = transition(size, zones, join, which)
    for key in KEYS:
        old, new = placement.groups(key)[0], placement.groups(key)[-1]
        for gainer in placement.gainers:
            if gainer not in new or gainer in old:
                continue
            senders = {s for s in placement.current.members
                       if placement.should_send(s, gainer, key, frozenset(unreachable))}
            losers = set(old) - set(new)
            reachable = set(old) - unreachable
            if not unreachable:
                assert senders == losers
            elif losers <= unreachable:
                assert senders == set(old)  # the gainer asks only those it reaches
            assert senders & reachable or not reachable


def test_leaves_never_take_the_next_ring_below_n_members() -> None:
    three = leaving(cluster(3), "n2")
    assert not three.in_transition and three.gainers == []  # the leave waits, moving nothing
    four = leaving(leaving(cluster(4), "n3"), "n2")  # two leave at once
    assert sorted(four.next.members) == ["n1", "n2", "n4"]  # the lower id stays, for now
    assert four.changing() == ["n2", "n3"]
    for key in KEYS[:50]:
        assert all(len(group) == 3 for group in four.groups(key))


def test_records_merge_by_version_in_any_order() -> None:
    base = cluster(3)
    a = base.joined("n4", "10.0.1.4:7000", "z0", 1)
    n4 = a.records["n4"]
    newer = replace(n4, status="normal", version=n4.version + 1)
    one = base.merged([n4]).merged([newer])
    other = base.merged([newer]).merged([n4])
    assert one.records == other.records
    assert one.records["n4"].status == "normal"
    assert one.merged([n4]) is one  # nothing newer: the same placement


def test_the_digest_names_the_layout_not_views_or_versions() -> None:
    placement = cluster(3)
    n1 = placement.records["n1"]
    same = placement.with_record(replace(n1, version=9, view=b"x" * 8, streamed=b"y" * 8))
    assert same.digest == placement.digest
    assert leaving(placement, "n1").digest != placement.digest


def test_colliding_tokens_of_concurrent_joiners_go_to_the_lower_id() -> None:
    base = cluster(3)
    n4 = base.joined("n4", "10.0.1.4:7000", "z0", 1).records["n4"]
    n5 = replace(n4, node_id="n5", address="10.0.1.5:7000")  # the very same tokens
    both = base.merged([n4, n5])
    assert set(both.next.tokens["n4"]) == set(n4.tokens)
    assert "n5" not in both.next.members  # it holds no token of its own
    with pytest.raises(ValueError, match="already a member"):
        both.joined("n4", "10.0.1.9:7000", "z0", 1)


def test_a_member_that_left_may_join_again_with_a_higher_version() -> None:
    placement = cluster(4)
    n2 = placement.records["n2"]
    gone = placement.with_record(replace(n2, status="left", version=n2.version + 2))
    back = gone.joined("n2", "10.0.9.9:7000", "z0", 1).records["n2"]
    assert (back.status, back.version) == ("joining", n2.version + 3)


def test_records_survive_a_save_and_a_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    placement = cluster(3).joined("n4", "[::1]:7004", "z0", 2)
    save_records(tmp_path, placement.records.values())
    loaded = load_records(tmp_path)
    assert loaded is not None
    assert {r.node_id: r for r in loaded} == dict(placement.records)
    assert load_records(tmp_path / "elsewhere") is None
    raw = json.loads((tmp_path / "placement.json").read_text())
    raw["records"][0]["status"] = "wandering"
    (tmp_path / "placement.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"damaged.*unknown status 'wandering'"):
        load_records(tmp_path)



record_changes = st.lists(st.tuples(
    st.integers(1, 5), st.sampled_from(["version", "view", "address", "status", "tokens"]),
    st.sampled_from(["joining", "normal", "leaving", "left"])), max_size=8)


@settings(max_examples=60, deadline=None)
@given(record_changes)
def test_a_placement_changed_record_by_record_places_every_key_as_one_built_afresh(
        changes: list[tuple[int, str, str]]) -> None:
    placement = cluster(5)
    for index, field, status in changes:
        record = placement.records[f"n{index}"]
        changed = {"version": record.version + 1, **{
            "view": {"view": bytes([index]) * 8},
            "address": {"address": f"10.0.9.{index}:7000"},
            "status": {"status": status},
            "tokens": {"tokens": record.tokens[1:]},
        }[field]} if field != "version" else {"version": record.version + 1}
        placement = placement.with_record(replace(record, **changed))
        afresh = Placement(placement.records, VNODES, 3)
        assert (placement.current, placement.next) == (afresh.current, afresh.next)
        assert placement.in_transition == afresh.in_transition
        for key in KEYS[:50]:
            assert groups_or_error(placement, key) == groups_or_error(afresh, key)


def groups_or_error(placement: Placement, key: bytes) -> object:
    """The key's replica groups, or why there are none (fewer members in the ring than
    replicas: the generated changes can make a state the protocol never reaches)."""
    try:
        return placement.groups(key)
    except ValueError as exc:
        return str(exc)
