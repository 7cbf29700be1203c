"""Searching for failing runs in simulation, and shrinking what it finds: ``kvcheck explore``.

A *case* is one simulated test: a configuration (workload, versioning, N/W/R, sloppy quorums —
whichever the user did not fix), a cluster seed, a number of clients, a time limit and a fault
schedule. Hypothesis draws cases, runs each (``kvcheck run --backend sim`` with the case's
arguments, in this process) and asks whether its verdict is the one expected: valid, against
the guarantee the configuration promises. What the design states as a weakness is not
searched for: last-write-wins losing concurrent adds (a set test) or losing to skewed clocks
(clock faults); the consistency matrix measures those. A case that is not — invalid, or a store that
crashed — is a *failure*; Hypothesis then shrinks it while it still fails the same way (the
same checkers object): fewer faults, fewer clients, a shorter run, fewer operations (an
operation limit, ``kvcheck run --operation-limit``), smaller numbers.

Faults are drawn as each kind's own timeline — a calm, a fault, a calm, … — so faults of
different kinds overlap and those of one kind never do (as a schedule requires); each fault's
targets and parameters come from the nemesis's own draw for its kind, seeded by the fault.
Deleting a fault, or shortening one, leaves a valid schedule, so shrinking stays in the space.

The search is seeded: the same ``seed``, shard and options try the same cases in the same
order in any process, so a count of runs pins it (:func:`_pinned` takes out what would make
Hypothesis's choices hang on anything else). A failure found always replays exactly. It stops
when it found and shrank a failure, or when ``budget`` seconds are spent, or after ``max_runs``
runs, or — searches running side by side share a :class:`Halt` — before its next run once
another has found one, or when told to stop (:meth:`Search.stop`, which a signal handler may
call; a run under way stops too, torn down as ``kvcheck run`` tears one down, when a signal
reaches it). A search stopped keeps the failure found so far, if any.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine, providers

from kvcheck.checkers import Verdict, check_run
from kvcheck.harness.backend import BackendError
from kvcheck.harness.cli import build_parser
from kvcheck.harness.cli.run import specs_from
from kvcheck.harness.databases import DatabaseError
from kvcheck.harness.runner import Interrupted, Runner, new_run_dir
from kvcheck.harness.sim_cluster import SimCluster
from kvcheck.harness.spec import TestSpec
from kvcheck.harness.virtual_time import run_virtual
from kvcheck.nemesis import KINDS, NEEDS_ZONES, Nemesis, PacketSupport, Planned
from kvcheck.nemesis.schedule import write_schedule

#: The operation limit drawn is at most this, or twice what the longest run issues at the
#: search's rate if more: enough that limits bind only as the search shrinks them.
MAX_OPERATIONS = 20_000
#: A case's rate unless the search fixes another: a run's default.
DEFAULT_RATE = TestSpec().rate
#: Checkers whose invalid verdict says the run holds no evidence, not that a promise broke
#: (``stats``: an operation type never succeeded — one write during a partition, say): such a
#: run is not a failure of the store.
NO_EVIDENCE = frozenset({"stats"})
#: The fault kinds a search draws from: the cases' nodes are in one zone, so not zone faults.
SEARCHED_KINDS = tuple(k for k in KINDS if k not in NEEDS_ZONES)
_ALL_PACKETS = PacketSupport(frozenset({"delay", "loss", "duplicate", "reorder", "rate"}))


@dataclass(frozen=True, slots=True)
class Axes:
    """What the search may vary: each tuple holds the choices (one when the user fixed it)."""

    nodes: int = 5
    workloads: tuple[str, ...] = ("register", "set")
    versionings: tuple[str, ...] = ("vclock", "lww")
    sloppy: tuple[bool, ...] = (False, True)
    n: int = 3
    w: tuple[int, ...] = (1, 2, 3)
    r: tuple[int, ...] = (1, 2, 3)
    kinds: tuple[str, ...] = SEARCHED_KINDS
    bugs: tuple[str, ...] = ()
    longest: int = 60  # seconds of client load, at most
    rate: float = DEFAULT_RATE  # operations per second, all clients together

    @property
    def most_operations(self) -> int:
        """The highest operation limit drawn (:data:`MAX_OPERATIONS`)."""
        return max(MAX_OPERATIONS, round(2 * self.rate * self.longest))


@dataclass(frozen=True, slots=True)
class Case:
    """One simulated test, as ``kvcheck run`` arguments (:meth:`argv`) and its schedule."""

    workload: str
    versioning: str
    sloppy: bool
    n: int
    w: int
    r: int
    nodes: int
    concurrency: int
    time_limit: int
    seed: int
    faults: tuple[Planned, ...]
    operations: int = 0  # at most, all clients together (0: as many as the time allows)
    bugs: tuple[str, ...] = ()
    rate: float = DEFAULT_RATE

    def argv(self, schedule: Path | None) -> list[str]:
        """The ``kvcheck run`` arguments of this case (with ``--schedule schedule`` when it has
        faults; the file is the caller's to write)."""
        argv = ["--backend", "sim", "--nodes", str(self.nodes), "--workload", self.workload,
                "--versioning", self.versioning, "--n", str(self.n), "--w", str(self.w),
                "--r", str(self.r),
                "--sloppy-quorum" if self.sloppy else "--no-sloppy-quorum",
                "--concurrency", str(self.concurrency), "--rate", f"{self.rate:g}",
                "--time-limit", str(self.time_limit),
                "--recovery-time", "5", "--seed", str(self.seed),
                "--operation-limit", str(self.operations)]
        argv += ["--schedule", str(schedule)] if self.faults and schedule else ["--nemesis",
                                                                                 "none"]
        for bug in self.bugs:
            argv += ["--bug", bug]
        return argv

    @property
    def sizes(self) -> dict[str, int]:
        """What shrinking makes smaller, the first the most important."""
        return {"faults": len(self.faults), "concurrency": self.concurrency,
                "time_limit": self.time_limit, "operation_limit": self.operations}

    @property
    def size(self) -> str:
        operations = f", at most {self.operations} operations" if self.operations else ""
        return (f"{len(self.faults)} fault(s), {self.concurrency} client(s), "
                f"{self.time_limit} s{operations}")


@dataclass(slots=True)
class Outcome:
    """How a case ended: the checkers that judged it invalid, the nodes that crashed, or the
    error that stopped the run before its verdict (a fault the backend could not make)."""

    invalid: tuple[str, ...]
    crashed: tuple[str, ...]
    run_dir: Path
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.invalid or self.crashed or self.error)

    @property
    def reason(self) -> str:
        words = [f"{name} invalid" for name in self.invalid]
        words += [f"the store crashed on {', '.join(self.crashed)}"] if self.crashed else []
        words += [f"the run stopped: {self.error}"] if self.error else []
        return "; ".join(words) or "valid"


def cases(axes: Axes) -> st.SearchStrategy[Case]:
    """Cases within ``axes`` (see the module docstring)."""

    @st.composite
    def build(draw: st.DrawFn) -> Case:
        workload = draw(st.sampled_from([w for w in axes.workloads
                                         if versionings_for(w, axes)]))
        versioning = draw(st.sampled_from(versionings_for(workload, axes)))
        kinds = kinds_for(versioning, axes)
        time_limit = draw(st.integers(5, axes.longest))
        drawn = draw(st.lists(st.tuples(st.sampled_from(kinds), st.integers(0, 20),
                                        st.integers(1, 15), st.integers(0, 2**16)),
                              max_size=10)) if kinds else []
        return Case(
            workload=workload, versioning=versioning,
            sloppy=draw(st.sampled_from(axes.sloppy)), n=axes.n,
            w=draw(st.sampled_from(axes.w)), r=draw(st.sampled_from(axes.r)),
            nodes=axes.nodes, concurrency=draw(st.integers(1, 2 * axes.nodes)),
            time_limit=time_limit, seed=draw(st.integers(0, 2**31 - 1)),
            faults=schedule_of(drawn, axes, time_limit),
            operations=draw(st.integers(1, axes.most_operations)), bugs=axes.bugs,
            rate=axes.rate)

    return build()


def versionings_for(workload: str, axes: Axes) -> tuple[str, ...]:
    """The versionings searched with ``workload``: last-write-wins loses one of two
    concurrent adds by design (docs/store.md), so a set test of it fails for a reason the
    design states, not a mistake; it is left out."""
    return tuple(v for v in axes.versionings if not (v == "lww" and workload == "set"))


def kinds_for(versioning: str, axes: Axes) -> tuple[str, ...]:
    """The fault kinds searched with ``versioning``: last-write-wins orders writes by wall
    clock, so skewed clocks make it lose writes by design; clock faults are left out."""
    return tuple(k for k in axes.kinds if not (versioning == "lww" and k == "clock"))


def schedule_of(drawn: Sequence[tuple[str, int, int, int]], axes: Axes,
                time_limit: int) -> tuple[Planned, ...]:
    """Faults from ``(kind, calm, duration, fault seed)``: each kind's in turn on its own
    timeline, its targets and parameters drawn by the nemesis; those past the time limit are
    dropped."""
    nodes = [f"n{i}" for i in range(1, axes.nodes + 1)]
    free_at = dict.fromkeys(axes.kinds, 0.0)
    faults = []
    for kind, calm, duration, fault_seed in drawn:
        at = free_at[kind] + calm
        if at >= time_limit:
            continue
        nemesis = Nemesis([kind], nodes, random.Random(fault_seed), hold=float(duration),
                          packets=_ALL_PACKETS, spare=f"n{axes.nodes + 1}", replicas=axes.n)
        fault = nemesis.draw(kind)
        faults.append(Planned(at, float(duration), kind, fault.targets, dict(fault.detail)))
        free_at[kind] = at + duration
    return tuple(sorted(faults, key=lambda f: f.at))


def spec_of(case: Case, schedule: Path) -> TestSpec:
    """The spec ``kvcheck run`` builds from the case's arguments (so that the command printed
    to replay a case runs exactly it); writes its faults to ``schedule``."""
    write_schedule(schedule, "schedule", case.faults)
    return specs_from(build_parser("run").parse_args(["run", *case.argv(schedule)]))[0]


def run_case(case: Case, histories: Path) -> Outcome:
    """Run ``case`` in simulation into ``histories``; check it."""
    spec = spec_of(case, histories / "schedule-input.json")
    run_dir, run_id = new_run_dir(histories, spec.name)
    runner = Runner(spec, SimCluster(spec, run_id, run_dir), run_dir)
    try:
        run_virtual(runner.run, seed=spec.seed)
    except (BackendError, DatabaseError) as exc:
        return Outcome((), (), run_dir, f"{type(exc).__name__}: {exc}")
    results = check_run(run_dir)
    invalid = tuple(sorted(c.checker for c in results.checks if c.valid is Verdict.INVALID
                           and c.checker not in NO_EVIDENCE))
    return Outcome(invalid, tuple(sorted(set(runner.crashed))), run_dir)


class Halt(Protocol):
    """A flag searches side by side share (a ``multiprocessing`` or ``threading`` Event)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class _Stop(BaseException):
    """Ends the search from inside Hypothesis (a BaseException, so not taken for a failure)."""


@dataclass(slots=True)
class Search:
    """One search (module docstring). :attr:`found` is the smallest failure seen, if any.
    ``halt``: set when this search finds a failure; when another set it first, this one ends
    before its next run (:attr:`halted`). :attr:`stopped_by` is the signal that stopped it, if
    one did (:meth:`stop`)."""

    axes: Axes
    scratch: Path
    seed: int = 0
    budget: float = 600.0
    max_runs: int = 1_000_000
    progress: Callable[[str], None] = lambda line: None
    halt: Halt | None = None
    halted: bool = False
    stopped_by: int | None = None
    runs: int = 0
    found: tuple[Case, Outcome] | None = None
    #: The first failure, before shrinking: (runs, seconds since the start, its case).
    first: tuple[int, float, Case] | None = None
    started: float = field(default_factory=time.monotonic)

    def stop(self, signum: int) -> None:
        """End the search before its next run, for signal ``signum``."""
        self.stopped_by = signum

    def run(self) -> tuple[Case, Outcome] | None:
        """Search until a failure is found and shrunk, the budget is spent, or :meth:`stop`."""
        @settings(max_examples=self.max_runs, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                  phases=[Phase.generate, Phase.shrink], print_blob=False,
                  verbosity=Verbosity.quiet)
        @given(cases(self.axes))
        def probe(case: Case) -> None:
            if self.stopped_by is not None or self.runs >= self.max_runs \
                    or time.monotonic() - self.started > self.budget:
                raise _Stop
            if self.found is None and self.halt is not None and self.halt.is_set():
                self.halted = True
                raise _Stop
            self.runs += 1
            try:
                outcome = run_case(case, self.scratch)
            except Interrupted as exc:  # the run's own handler took the signal
                self.stop(exc.signum)
                raise _Stop from None
            if not outcome.failed or (self.found is not None
                                      and _how(outcome) != _how(self.found[1])):
                shutil.rmtree(outcome.run_dir)  # passed, or failed another way: not this one
                return
            if self.found is None:
                if self.halt is not None:
                    self.halt.set()
                self.first = self.runs, round(time.monotonic() - self.started, 1), case
                self.progress(f"run {self.runs}: {outcome.reason} ({case.size}); shrinking")
            if self.found is None or _smaller(case, self.found[0]):
                if self.found is not None:
                    shutil.rmtree(self.found[1].run_dir)
                self.found = case, outcome
                self.progress(f"run {self.runs}: still {outcome.reason} with {case.size}")
            else:
                shutil.rmtree(outcome.run_dir)
            raise AssertionError(outcome.reason)

        # _Stop: the budget is spent, or halted; AssertionError: a failure found and shrunk.
        with _pinned(), contextlib.suppress(_Stop, AssertionError):
            hypothesis_seed(self.seed)(probe)()
        return self.found


@contextlib.contextmanager
def _pinned() -> Iterator[None]:
    """Hypothesis's search a function of its seed and of run counts alone, for the duration.

    Hypothesis (6.131 and later) sometimes draws a constant found in the source of the local
    modules loaded so far, so what it tries would hang on what else the process imported (the
    CLI or a test run, a checker imported lazily): that pool is emptied, and its cache cleared
    on the way in and out (other users in the process keep their own). It also stops shrinking
    after five minutes of the wall clock: here the search's own budget does.
    """
    local_constants = getattr(providers, "_get_local_constants", None)
    shrinking_limit = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = 10**12  # never, in effect: the search's budget bounds it
    if local_constants is not None:
        from hypothesis.internal.constants_ast import Constants  # only where the pool is

        providers.CONSTANTS_CACHE.cache.clear()
        providers._get_local_constants = Constants  # an empty pool
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = shrinking_limit
        if local_constants is not None:
            providers._get_local_constants = local_constants
            providers.CONSTANTS_CACHE.cache.clear()


def _how(outcome: Outcome) -> tuple[tuple[str, ...], bool, str]:
    """How a run failed, for telling one failure from another while shrinking."""
    return outcome.invalid, bool(outcome.crashed), outcome.error.partition(":")[0]


def _smaller(a: Case, b: Case) -> bool:
    return tuple(a.sizes.values()) < tuple(b.sizes.values())
