"""``kvcheck run``: start a cluster, drive clients while the nemesis breaks things, check.

Its exit code is the verdict (:mod:`kvcheck.harness.exitcodes`); with ``--test-count`` the
worst of the runs. ``kvcheck suite`` runs its tests through :func:`run_tests`.
"""

from __future__ import annotations

import argparse
import errno
import os
import time
from pathlib import Path
from typing import Any, get_args

import trio
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from kvcheck.checkers import Results, check_run
from kvcheck.harness.backend import Backend, BackendError
from kvcheck.harness.base_image import ImageError
from kvcheck.harness.cli.options import (
    FOR_TESTS,
    SPEC_DEFAULTS,
    add_cluster_options,
    add_concurrency,
    add_database,
    add_histories,
    add_host_options,
    host_settings,
    zone_settings,
)
from kvcheck.harness.cli.values import positive_float
from kvcheck.harness.databases import DatabaseError, describe
from kvcheck.harness.docker_cluster import DockerCluster
from kvcheck.harness.engine import EngineUnavailable, connect
from kvcheck.harness.exitcodes import Exit, worst
from kvcheck.harness.image import ensure_image
from kvcheck.harness.junit import RunRecord, write_junit
from kvcheck.harness.package import PackageError
from kvcheck.harness.report import write_report
from kvcheck.harness.runner import Interrupted, Progress, Runner, new_run_dir
from kvcheck.harness.sim_cluster import SimCluster
from kvcheck.harness.spec import GUARANTEES, SpecError, TestSpec, Workload
from kvcheck.harness.ssh_cluster import SshCluster
from kvcheck.harness.verdicts import STYLE, WORD, print_results
from kvcheck.harness.virtual_time import DeterminismUnavailable, run_virtual
from kvcheck.nemesis import ZONE_OUTAGES, NemesisError, read_schedule
from kvcheck.store.bugs import describe_bugs
from kvcheck.terminal import count, seconds


def register(commands: Any) -> None:
    """Add ``run`` to the ``kvcheck`` subcommands ``commands``."""
    p = commands.add_parser("run", help="run a test against a store cluster in Docker",
                            description="Start a cluster of store containers, drive clients "
                            "against it while the nemesis breaks things, heal, check the "
                            "history. Exit code: the verdict (docs/running.md).")
    add_arguments(p)
    p.set_defaults(handler=_run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``kvcheck run`` (also what each test of a suite file may set)."""
    p.add_argument("--name", default=SPEC_DEFAULTS.name,
                   help="test name: runs go to DIR/NAME/TIMESTAMP/ of --histories "
                   "(default: %(default)s)")
    add_database(p)
    p.add_argument("--backend", choices=("docker", "sim", "ssh"), default=SPEC_DEFAULTS.backend,
                   help="docker: a container per node; sim: the reference store's nodes "
                   "simulated in this process, in virtual time — --time-limit and every other "
                   "duration are simulated seconds, and a seed replays a run exactly "
                   "(docs/sim.md); ssh: a real host per node (--node, --nodes-file: "
                   "docs/hosts.md) (default: %(default)s)")
    add_host_options(p)
    add_cluster_options(p, FOR_TESTS)
    p.add_argument("--bug", action="append", default=[], metavar="NAME",
                   help="switch on a deliberate mistake in every node of the reference store, "
                   "to see kvcheck catch it (repeatable; --bug help lists them)")
    add_concurrency(p)
    p.add_argument("--rate", type=float, default=SPEC_DEFAULTS.rate,
                   help="operations per second, all workers together (default: %(default)g)")
    p.add_argument("--time-limit", type=float, default=SPEC_DEFAULTS.time_limit,
                   metavar="SECONDS", help="seconds of client load (default: %(default)g)")
    p.add_argument("--operation-limit", type=int, default=SPEC_DEFAULTS.operation_limit,
                   metavar="N", help="issue at most N operations, all workers together; the "
                   "faults go on until the time limit (default: no limit)")
    p.add_argument("--workload", choices=get_args(Workload), default=SPEC_DEFAULTS.workload,
                   help="register: reads and unique writes; set: adds by read-modify-write "
                   "(default: %(default)s)")
    p.add_argument("--nemesis", default=None,
                   help="comma list of partition, kill, pause, clock, packet, membership, "
                   "zone (with --zones 2 or more); disk and power with --backend sim; or none "
                   f"(default: {','.join(SPEC_DEFAULTS.nemesis)})")
    p.add_argument("--nemesis-mode", choices=("overlap", "turns"),
                   default=SPEC_DEFAULTS.nemesis_mode,
                   help="overlap: each kind starts and stops on its own timeline, so faults of "
                   "different kinds overlap; turns: one fault at a time (default: %(default)s)")
    p.add_argument("--schedule", type=Path, metavar="FILE",
                   help="run exactly the faults of this schedule (a schedule.json, written by "
                   "every run, or by hand: docs/nemesis.md) instead of drawing them")
    p.add_argument("--zone-outage", choices=ZONE_OUTAGES, default=SPEC_DEFAULTS.zone_outage,
                   help="how the zone nemesis loses a zone: network (cut off from the other "
                   "zones, its nodes still talking among themselves) or power (every node of "
                   "it killed, restarted at the stop) (default: drawn for each fault)")
    p.add_argument("--partition-topologies", default="", metavar="A,B",
                   help="the partition topologies to draw from: halves, random-halves, "
                   "isolate-one, majorities-ring, bridge, and isolate-primary (the primary, "
                   "alone or with a minority, cut off; where the database can name it) "
                   "(default: every one the nodes and the database allow)")
    p.add_argument("--nemesis-interval", type=float, default=SPEC_DEFAULTS.nemesis_interval,
                   metavar="SECONDS",
                   help="seconds between faults, and how long each lasts (default: %(default)g)")
    p.add_argument("--recovery-time", type=float, default=SPEC_DEFAULTS.recovery_time,
                   metavar="SECONDS", help="seconds to wait after healing before the final "
                   "reads (default: %(default)g)")
    p.add_argument("--op-timeout", type=positive_float, default=SPEC_DEFAULTS.op_timeout,
                   metavar="SECONDS", help="an operation not answered in this time is "
                   "cancelled and recorded as indeterminate (info) (default: %(default)g)")
    p.add_argument("--request-timeout-ms", type=int,
                   default=SPEC_DEFAULTS.request_timeout_ms, metavar="MS",
                   help="the reference store's coordinator gives up on a request after this "
                   "long (default: %(default)s); keep --op-timeout above it")
    p.add_argument("--expect", choices=GUARANTEES, default=SPEC_DEFAULTS.expect,
                   help="the guarantee to judge (default: derived from n, w, r, "
                   "--sloppy-quorum and --read-repair)")
    p.add_argument("--seed", type=int, help="random seed (default: random, recorded)")
    p.add_argument("--test-count", type=int, default=1,
                   help="run the test this many times, seeds SEED, SEED+1, ... "
                   "(default: %(default)s)")
    p.add_argument("--leave-running", action=argparse.BooleanOptionalAction,
                   default=SPEC_DEFAULTS.leave_running,
                   help="keep the cluster after the test (remove it with kvcheck cleanup)")
    add_histories(p, "where run directories go (default: %(default)s)")
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="also write a JUnit XML file: one test case per checker")


def specs_from(args: argparse.Namespace) -> list[TestSpec]:
    """The specs of this command's tests: ``--test-count`` of them, seeds SEED, SEED+1, ...
    (each drawn at random without ``--seed``). Raises SpecError."""
    given: dict[str, Any] = {}
    hosts = host_settings(args)
    nodes = args.nodes or (len(hosts["hosts"]) if args.backend == "ssh" and hosts["hosts"]
                           else SPEC_DEFAULTS.nodes)
    if args.concurrency is not None:
        given["concurrency"] = args.concurrency.workers(nodes)
    nemesis = SPEC_DEFAULTS.nemesis
    if args.schedule is not None:
        if args.nemesis is not None:
            raise SpecError("--nemesis and --schedule exclude each other: a schedule names "
                            "its faults' kinds")
        try:
            given["schedule"] = read_schedule(args.schedule)
        except NemesisError as exc:
            raise SpecError(f"--schedule: {exc}") from None
    elif args.nemesis is not None:
        nemesis = tuple(k.strip() for k in args.nemesis.split(",") if k.strip())
    given.update(
        name=args.name, db=args.db, db_options=tuple(args.db_opt), nodes=nodes,
        rate=args.rate, time_limit=args.time_limit, workload=args.workload,
        nemesis=nemesis, nemesis_mode=args.nemesis_mode,
        partition_topologies=tuple(t.strip() for t in args.partition_topologies.split(",")
                                   if t.strip()),
        nemesis_interval=args.nemesis_interval, recovery_time=args.recovery_time,
        n=args.n, w=args.w, r=args.r, versioning=args.versioning,
        sloppy_quorum=args.sloppy_quorum, read_repair=args.read_repair, expect=args.expect,
        op_timeout=args.op_timeout, request_timeout_ms=args.request_timeout_ms,
        leave_running=args.leave_running, backend=args.backend, bugs=tuple(args.bug),
        operation_limit=args.operation_limit, zone_outage=args.zone_outage,
        **zone_settings(args), **hosts)
    return [TestSpec(**given, **({} if args.seed is None else {"seed": args.seed + i}))
            for i in range(max(1, args.test_count))]


def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.db == "help":
        out.print(describe(), markup=False, highlight=False)
        return Exit.OK
    if "help" in args.bug:
        out.print(describe_bugs(), markup=False, highlight=False, soft_wrap=True)
        return Exit.OK
    code, records = run_tests(args, out, err)
    if args.junit and records:
        out.print(f"JUnit: {write_junit(args.junit, records)}", markup=False, highlight=False)
    return code


def run_tests(args: argparse.Namespace, out: Console, err: Console,
              expect_anomaly: str | None = None) -> tuple[Exit, list[RunRecord]]:
    """Run the tests ``args`` describe (canaries that must produce ``expect_anomaly``, if
    given); return the worst exit code and a record of each run (none for bad arguments). An
    interrupt stops after the run it interrupted."""
    try:
        specs = specs_from(args)
    except SpecError as exc:
        err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
        return Exit.USAGE, []
    try:
        args.histories.mkdir(parents=True, exist_ok=True)
        if not os.access(args.histories, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        err.print(f"[bold red]kvcheck run:[/] cannot keep runs in {args.histories}: "
                  f"{exc.strerror or exc}; choose another place with --histories",
                  highlight=False)
        return Exit.USAGE, []
    docker: tuple[Any, str] | None = None
    if any(spec.backend == "docker" for spec in specs):
        try:
            client = connect()
            docker = client, ensure_image(client, specs[0].database, progress=lambda line:
                                          err.print(line, style="dim", markup=False,
                                                    highlight=False))
        except (EngineUnavailable, ImageError, PackageError) as exc:
            err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
            return Exit.CRASH, [RunRecord(s.name, args.histories, None, expect_anomaly,
                                          Exit.CRASH) for s in specs]
    records = []
    for spec in specs:
        code, results, run_dir, crashed = _run_one(spec, docker, args.histories, out, err)
        records.append(RunRecord(spec.name, run_dir, results.to_json() if results else None,
                                 expect_anomaly, code, crashed))
        if code in (Exit.INTERRUPTED, Exit.TERMINATED):
            break
    return worst(r.exit_code for r in records), records


def _run_one(spec: TestSpec, docker: tuple[Any, str] | None, histories: Path, out: Console,
             err: Console) -> tuple[Exit, Results | None, Path, tuple[str, ...]]:
    """Run one test (in Docker, ``docker`` is the engine's client and the node image); return
    its exit code, its results (None if it did not finish), its directory and the nodes that
    crashed during it."""
    run_dir, run_id = new_run_dir(histories, spec.name)
    backend: Backend
    if spec.backend == "sim":
        backend = SimCluster(spec, run_id, run_dir)
    elif spec.backend == "ssh":
        backend = SshCluster(spec, spec.database, run_id, run_dir, spec.hosts,
                             spec.ssh_options, say=lambda line: err.print(
                                 line, style="dim", markup=False, highlight=False))
    else:
        assert docker is not None
        backend = DockerCluster(*docker, run_id, spec, spec.database, run_dir)
    runner = Runner(spec, backend, run_dir)
    out.print(f"[bold]{spec.name}[/]: {_configuration(spec)}, {spec.workload} workload, "
              f"nemesis {','.join(spec.nemesis) or 'none'}, seed {spec.seed} → {run_dir}",
              highlight=False)
    try:
        if spec.backend == "sim":
            run_virtual(runner.run, seed=spec.seed)
        else:
            trio.run(runner.run, _view(out))
    except Interrupted as exc:
        err.print(f"kvcheck run: {exc}; the cluster was torn down. The history so far is in "
                  f"{run_dir}", highlight=False)
        return Exit.of_signal(exc.signum), None, run_dir, ()
    except BackendError as exc:
        err.print("[bold red]kvcheck run:[/] " + escape(f"--db {spec.db}: {exc}"),
                  highlight=False)
        return Exit.CRASH, None, run_dir, ()
    except DeterminismUnavailable as exc:
        err.print("[bold red]kvcheck run:[/] " + escape(str(exc)), highlight=False)
        return Exit.CRASH, None, run_dir, ()
    except DatabaseError as exc:
        err.print("[bold red]kvcheck run:[/] " + escape(
            f"the adapter of --db {spec.db} failed: {exc}. The cluster was torn down."),
            highlight=False)
        return Exit.CRASH, None, run_dir, ()
    if spec.leave_running:
        hosts = ", ".join(f"{n}={backend.host(n)}" for n in backend.nodes)
        out.print(f"cluster left running ({hosts}); remove it with kvcheck cleanup")
    for note in backend.notes:
        err.print(f"kvcheck run: note: {note}", markup=False, highlight=False)
    results = check_run(run_dir)
    write_report(run_dir)
    _summarise(out, spec, results, run_dir)
    crashed = tuple(sorted(set(runner.crashed)))
    if crashed:
        err.print(f"[bold red]kvcheck run:[/] the store crashed on {', '.join(crashed)} during "
                  f"the test (it exited by itself; see nodes/<node>/<process>.log in "
                  f"{run_dir}): invalid", highlight=False)
        return Exit.INVALID, results, run_dir, crashed
    return Exit.of(results.valid), results, run_dir, ()


def _configuration(spec: TestSpec) -> str:
    """The database and its settings, in a few words."""
    if spec.db == "kvstore":
        simulated = "simulated " if spec.backend == "sim" else ""
        bugs = f", bugs: {', '.join(spec.bugs)}" if spec.bugs else ""
        return (f"{spec.nodes} {simulated}nodes, N={spec.n} W={spec.w} R={spec.r} "
                f"{spec.versioning}{bugs}")
    options = " ".join(f"{k}={v}" for k, v in spec.db_options)
    return f"{spec.db} on {spec.nodes} nodes" + (f" ({options})" if options else "")


def progress_line(progress: Progress, now: float) -> str:
    """The live view's line at monotonic time ``now``: phase, time, op counts, faults."""
    counts = progress.history.counts if progress.history else {}
    faults = "; ".join(progress.faults) or "none"
    return (f"{progress.phase} · {seconds(int(now - progress.started))} · "
            f"ok {count(counts.get('ok', 0))} fail {count(counts.get('fail', 0))} "
            f"info {count(counts.get('info', 0))} · faults: {faults}")


def _view(out: Console) -> Any:
    """The live view: a status line that redraws on a terminal, a log line every 10 s in CI."""

    async def view(progress: Progress) -> None:
        if not out.is_terminal:
            while True:
                await trio.sleep(10)
                out.print(progress_line(progress, time.monotonic()), highlight=False)
        with Live(console=out, refresh_per_second=4, transient=True) as live:
            while True:
                live.update(progress_line(progress, time.monotonic()))
                await trio.sleep(0.25)

    return view


def _summarise(out: Console, spec: TestSpec, results: Results, run_dir: Path) -> None:
    out.print(f"expected guarantee: [bold]{spec.guarantee}[/]", highlight=False)
    print_results(out, results)
    for checker, why in spec.skipped_checkers.items():
        out.print(f"  {checker}: not run ({why})", markup=False, highlight=False)
    out.print(f"verdict: [{STYLE[results.valid]}]{WORD[results.valid]}[/]  ·  "
              f"report: {run_dir / 'report.html'}", highlight=False)
