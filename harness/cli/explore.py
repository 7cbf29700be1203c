"""``kvcheck explore``: search simulated runs for a failure, shrink it, print how to replay it.

Each search writes ``DIR/explore/<timestamp>[-shard-I-of-N]/``: ``summary.json`` (what was
searched, how long, and the failure if one was found: why, its size, the command that replays
it), the failure's ``schedule.json`` and its run directory under ``run/``. ``--merge DIR…``
reads the summaries of shards run anywhere and reports them together (docs/sim.md).
``--jobs J`` searches as J shards at once, each in a process of its own, and reports them as
``--merge`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from rich.console import Console

from kvcheck.harness.cli import guarded, main
from kvcheck.harness.cli.options import SPEC_DEFAULTS, add_histories
from kvcheck.harness.cli.values import positive_float, positive_int, shard_option
from kvcheck.harness.directories import new_dir
from kvcheck.harness.exitcodes import Exit, worst
from kvcheck.harness.explore import (
    SEARCHED_KINDS,
    Axes,
    Case,
    Halt,
    Outcome,
    Search,
    versionings_for,
)
from kvcheck.harness.runner import new_run_id
from kvcheck.harness.spec import Workload
from kvcheck.nemesis import NemesisError, parse_kinds
from kvcheck.nemesis.schedule import write_schedule
from kvcheck.store.bugs import check_bugs, describe_bugs
from kvcheck.store.versions import Versioning
from kvcheck.terminal import console

#: Every exit code a shard's process may end with; any other (a signal) is a crash.
EXIT_CODES = frozenset(int(code) for code in Exit)


def register(commands: Any) -> None:
    """Add ``explore`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser(
        "explore", help="search simulated runs for a failure and shrink it",
        description="Run simulated tests (--backend sim) drawn by Hypothesis — configurations, "
        "overlapping fault schedules, seeds — until one's verdict is not the one expected, "
        "shrink it, and print a command that replays it exactly. Options given fix that axis "
        "of the search. Exit code: 1 when a failure was found, 0 when the budget ran out "
        "without one; Ctrl-C or SIGTERM stops it (130, 143), keeping what it found "
        "(docs/sim.md).")
    p.add_argument("--workload", choices=get_args(Workload), help="default: either")
    p.add_argument("--versioning", choices=get_args(Versioning), help="default: either")
    p.add_argument("--nemesis", default=",".join(SEARCHED_KINDS),
                   help="the fault kinds to draw from, comma-separated, or none "
                   "(default: %(default)s)")
    p.add_argument("--nodes", type=int, default=5, help="cluster size (default: %(default)s)")
    p.add_argument("--n", type=int, default=3, help="replicas per key (default: %(default)s)")
    p.add_argument("--w", type=int, help="write quorum (default: any from 1 to N)")
    p.add_argument("--r", type=int, help="read quorum (default: any from 1 to N)")
    p.add_argument("--sloppy-quorum", action=argparse.BooleanOptionalAction, default=None,
                   help="sloppy or strict quorums (default: either)")
    p.add_argument("--rate", type=positive_float, default=SPEC_DEFAULTS.rate, metavar="OPS",
                   help="operations per second of every run, all clients together; races that "
                   "need load show sooner at a higher rate, at the cost of slower runs "
                   "(default: %(default)g)")
    p.add_argument("--bug", action="append", default=[], metavar="NAME",
                   help="switch on a deliberate mistake of the store (repeatable; --bug help "
                   "lists them)")
    p.add_argument("--budget", type=positive_float, default=600.0, metavar="SECONDS",
                   help="stop searching after this many seconds (default: %(default)g)")
    p.add_argument("--max-runs", type=int, default=1_000_000, metavar="N",
                   help="stop searching after this many runs, shrinking included (a bound "
                   "that does not depend on the machine's speed)")
    p.add_argument("--seed", type=int, default=0,
                   help="the search's seed: the same seed tries the same runs (default: 0)")
    p.add_argument("--shard", type=shard_option, default=(0, 1), metavar="I/N",
                   help="search the I-th of N disjoint parts (I from 0), e.g. one per job of "
                   "a batch system")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="J",
                   help="search as J shards at once, each in a process of its own (with "
                   "--shard I/N: shards I*J to I*J+J-1 of N*J); the first failure found stops "
                   "the others (default: %(default)s, so that a seed searches the same runs on "
                   "any machine)")
    p.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                   help="instead of searching, report the searches whose summaries are under "
                   "these directories")
    add_histories(p, "where explore/ goes (default: %(default)s)")
    p.set_defaults(handler=_explore)


def axes_from(args: argparse.Namespace) -> Axes:
    """The search space the options leave. Raises ValueError naming a bad option."""
    kinds = tuple(parse_kinds(args.nemesis))
    if zoned := sorted(set(kinds) - set(SEARCHED_KINDS)):
        raise ValueError(f"--nemesis {', '.join(zoned)}: the search puts every node in one "
                         "zone; test zone outages with kvcheck run --zones")
    if not 1 <= args.n <= args.nodes:
        raise ValueError(f"--n must be from 1 to --nodes ({args.nodes})")
    for name in ("w", "r"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= args.n:
            raise ValueError(f"--{name} must be from 1 to --n ({args.n})")
    try:
        bugs = check_bugs(args.bug)
    except ValueError as exc:
        raise ValueError(f"--bug: {exc}") from None
    quorums = tuple(range(1, args.n + 1))
    axes = Axes(
        nodes=args.nodes, n=args.n, kinds=kinds, bugs=bugs, rate=args.rate,
        workloads=(args.workload,) if args.workload else ("register", "set"),
        versionings=(args.versioning,) if args.versioning else ("vclock", "lww"),
        sloppy=(args.sloppy_quorum,) if args.sloppy_quorum is not None else (False, True),
        w=(args.w,) if args.w else quorums, r=(args.r,) if args.r else quorums)
    if not any(versionings_for(workload, axes) for workload in axes.workloads):
        raise ValueError("--versioning lww with --workload set: last-write-wins loses "
                         "concurrent adds by design, so every such run fails; search register "
                         "with lww, or set with vclock")
    return axes


def _explore(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.merge:
        return _merge(args.merge, out, err)
    if "help" in args.bug:
        out.print(describe_bugs(), markup=False, highlight=False, soft_wrap=True)
        return Exit.OK
    try:
        axes = axes_from(args)
    except (ValueError, NemesisError) as exc:
        err.print(f"[bold red]kvcheck explore:[/] {exc}", highlight=False)
        return Exit.USAGE
    stamp, _ = new_run_id()
    explore_dir = (args.histories / "explore").resolve()
    if args.jobs > 1:
        return _in_parallel(args, axes, stamp, explore_dir, out, err)
    index, count = args.shard
    name = stamp if count == 1 else f"{stamp}-shard-{index}-of-{count}"
    return _search(args, axes, args.shard, new_dir(explore_dir / name), out)


def _search(args: argparse.Namespace, axes: Axes, shard: tuple[int, int], where: Path,
            out: Console, halt: Halt | None = None) -> int:
    """Search ``shard`` (I, N) of ``axes`` into the directory ``where``; print and write what
    it found."""
    index, count = shard
    tag = f"shard {index}/{count}: " if count > 1 else ""
    with tempfile.TemporaryDirectory(prefix="kvcheck-explore-") as scratch:
        search = Search(axes, Path(scratch), seed=args.seed * count + index, budget=args.budget,
                        max_runs=args.max_runs, halt=halt,
                        progress=lambda line: out.print(tag + line, markup=False,
                                                        highlight=False))
        with _stopped_by_signals(search):
            out.print(f"exploring{f' shard {index}/{count}' if count > 1 else ''} for "
                      f"{args.budget:g} s at most → {where}", highlight=False)
            found = search.run()
    seconds = round(time.monotonic() - search.started, 1)
    stopped_by = signal.Signals(search.stopped_by).name if search.stopped_by else None
    summary: dict[str, Any] = {
        "format": "kvcheck-explore", "version": 1, "seed": args.seed,
        "shard": [index, count], "runs": search.runs, "seconds": seconds,
        "halted": search.halted, "stopped_by": stopped_by, "axes": _axes_json(axes),
        "failure": None}
    if found is not None:
        summary["failure"] = _replay(*found, where, out)
        if search.first is not None:
            runs, after, first = search.first
            summary["failure"]["found_after"] = {"runs": runs, "seconds": after}
            summary["failure"]["before_shrinking"] = first.sizes
    (where / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    why = f", {stopped}" if (stopped := _why_stopped(summary)) else ""
    if found is None:
        out.print(f"{tag}no failure in {search.runs} runs ({seconds:g} s{why})",
                  highlight=False)
    else:
        out.print(f"{tag}found after {search.runs} runs ({seconds:g} s{why}): "
                  f"{summary['failure']['reason']}, shrunk to {found[0].size}", highlight=False)
        out.print(f"{tag}replay: {summary['failure']['replay']}", markup=False,
                  highlight=False, soft_wrap=True)
    if search.stopped_by:
        return Exit.of_signal(search.stopped_by)
    return Exit.OK if found is None else Exit.INVALID


@contextlib.contextmanager
def _stopped_by_signals(search: Search) -> Iterator[None]:
    """For the duration, SIGINT or SIGTERM stops ``search`` before its next run (a run under
    way takes the signal itself, and stops); a second one raises KeyboardInterrupt at once."""
    def stop(signum: int, frame: Any) -> None:
        search.stop(signum)
        for again in (signal.SIGINT, signal.SIGTERM):
            signal.signal(again, signal.default_int_handler)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT,
                                                                   signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _in_parallel(args: argparse.Namespace, axes: Axes, stamp: str, explore_dir: Path,
                 out: Console, err: Console) -> int:
    """Search ``--shard I/N`` as ``--jobs J`` shards (I·J + k of N·J), each in a process of its
    own sharing a :class:`Halt`, into ``explore_dir``; then report them as ``--merge`` does.
    A terminal's Ctrl-C (which every shard receives) or SIGTERM (passed on to them) stops
    every shard as it stops a search."""
    index, count = args.shard
    shards = [(index * args.jobs + k, count * args.jobs) for k in range(args.jobs)]
    wheres = [new_dir(explore_dir / f"{stamp}-shard-{i}-of-{n}") for i, n in shards]
    context = multiprocessing.get_context("spawn")
    halt = context.Event()
    processes = [context.Process(target=_shard_process, args=(args, axes, shard, where, halt))
                 for shard, where in zip(shards, wheres, strict=True)]
    stopped_by: int | None = None
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        for process in processes:
            process.start()
        while True:
            try:
                for process in processes:
                    process.join()
                break
            except KeyboardInterrupt:  # a terminal's Ctrl-C, which the shards have too
                stopped_by = signal.SIGINT
            except _Terminated:  # to this process alone: pass it on, once
                stopped_by = signal.SIGTERM
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                for process in processes:
                    if process.pid is not None and process.exitcode is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(process.pid, signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = {shard: process.exitcode for shard, process in zip(shards, processes, strict=True)}
    merged = _merge(wheres, out, err)
    if stopped_by is not None:
        return Exit.of_signal(stopped_by)
    if broken := {shard: code for shard, code in codes.items()
                  if code not in (Exit.OK, Exit.INVALID)}:
        for (i, n), code in broken.items():
            err.print(f"kvcheck explore: shard {i}/{n} ended with exit code {code}",
                      highlight=False)
        return worst(code if code in EXIT_CODES else Exit.CRASH for code in broken.values())
    return merged


def _shard_process(args: argparse.Namespace, axes: Axes, shard: tuple[int, int],
                   where: Path, halt: Halt) -> None:
    """One shard of :func:`_in_parallel`, in its own process: exits with its code."""
    sys.exit(guarded(lambda: _search(args, axes, shard, where, console(), halt),
                     console(stderr=True)))


class _Terminated(BaseException):
    """SIGTERM reached the process that runs the shards."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated


def _replay(case: Case, outcome: Outcome, where: Path, out: Console) -> dict[str, Any]:
    """Run the shrunk failure again into ``where/run`` (a simulated run replays exactly) and
    describe it, with the one-line command that replays it."""
    schedule = where / "schedule.json"
    write_schedule(schedule, "schedule", case.faults)
    argv = [*case.argv(schedule), "--histories", str(where / "run")]
    code = main(["run", *argv])
    return {"reason": outcome.reason, "invalid": list(outcome.invalid),
            "crashed": list(outcome.crashed), "error": outcome.error or None,
            "replayed_exit_code": code, **case.sizes,
            "run": str((where / "run" / "latest").resolve()),
            "replay": "kvcheck run " + " ".join(argv)}


def _axes_json(axes: Axes) -> dict[str, Any]:
    return {"nodes": axes.nodes, "n": axes.n, "w": list(axes.w), "r": list(axes.r),
            "workloads": list(axes.workloads), "versionings": list(axes.versionings),
            "sloppy_quorum": list(axes.sloppy), "nemesis": list(axes.kinds),
            "bugs": list(axes.bugs), "rate": axes.rate}


def _merge(dirs: list[Path], out: Console, err: Console) -> int:
    """Report the searches under ``dirs``: exit 1 when any found a failure, 0 when none did,
    2 when none did but some summary could not be read (it may have held one)."""
    paths = sorted({p.resolve() for d in dirs for p in d.rglob("summary.json")})
    found, runs, searches, unreadable = [], 0, 0, 0
    for path in paths:
        try:
            summary = _summary(path)
        except (OSError, ValueError) as exc:
            err.print(f"kvcheck explore: skipping {path}: {exc}", markup=False,
                      highlight=False, soft_wrap=True)
            unreadable += 1
            continue
        if summary is None:
            continue  # another tool's summary.json
        searches += 1
        runs += summary["runs"]
        index, count = summary["shard"]
        failure = summary["failure"]
        state = f"found: {failure['reason']}" if failure else "no failure"
        if stopped := _why_stopped(summary):
            state += f" ({stopped})"
        out.print(f"{path.parent.name}: shard {index}/{count}, {summary['runs']} runs, "
                  f"{summary.get('seconds')} s: {state}", markup=False, highlight=False)
        if failure:
            found.append(failure)
    if not searches and not unreadable:
        err.print("kvcheck explore: no summary.json of a search under "
                  f"{', '.join(map(str, dirs))}", markup=False, highlight=False)
        return Exit.USAGE
    out.print(f"{searches} search(es), {runs} runs, {len(found)} failure(s)"
              + (f", {unreadable} summary(ies) unreadable" if unreadable else ""),
              highlight=False)
    for failure in found:
        out.print(f"replay: {failure['replay']}", markup=False, highlight=False, soft_wrap=True)
    return Exit.INVALID if found else Exit.UNKNOWN if unreadable else Exit.OK


def _why_stopped(summary: dict[str, Any]) -> str:
    """Why the search of ``summary`` stopped early, in words; empty when it did not."""
    if summary.get("stopped_by"):
        return f"stopped by {summary['stopped_by']}"
    return "stopped: another shard found a failure" if summary.get("halted") else ""


def _summary(path: Path) -> dict[str, Any] | None:
    """The search summary at ``path``; None when the file is not one (another format).
    Raises OSError or ValueError, saying what is wrong, for one that cannot be read."""
    summary = json.loads(path.read_text())
    if not isinstance(summary, dict) or summary.get("format") != "kvcheck-explore":
        return None
    runs, shard, failure = summary.get("runs"), summary.get("shard"), summary.get("failure")
    if not isinstance(runs, int) or runs < 0:
        raise ValueError(f"runs is {runs!r}, not a count")
    if not (isinstance(shard, list) and len(shard) == 2
            and all(isinstance(n, int) for n in shard)):
        raise ValueError(f"shard is {shard!r}, not [I, N]")
    if failure is not None and not (isinstance(failure, dict)
                                    and isinstance(failure.get("reason"), str)
                                    and isinstance(failure.get("replay"), str)):
        raise ValueError("its failure has no reason or replay command")
    return summary
