"""``kvcheck run``, ``kvcheck image build`` and ``kvcheck cleanup``.

Exit codes of ``run``: 0 the expected guarantee held, 1 it did not, 2 undecided (unknown),
254 bad arguments, 255 the test could not run (no Docker engine, image build failed, a node
would not start) or crashed; 130 / 143 interrupted by SIGINT / SIGTERM (the cluster is torn down
first). With ``--test-count`` the worst outcome wins.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.live import Live

from checkers import Verdict, check_run
from harness.backend import BackendError
from harness.docker_cluster import DockerCluster, cleanup
from harness.engine import EngineUnavailable, connect
from harness.image import Base, ImageError, build_image, ensure_image, find_project_root
from harness.report import write_report
from harness.runner import (
    EXIT_INTERRUPTED,
    Interrupted,
    Progress,
    Runner,
    new_run_dir,
)
from harness.spec import GUARANTEES, SpecError, TestSpec
from harness.verdicts import STYLE, WORD, print_results

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 254, 255
_EXIT = {Verdict.VALID: EXIT_VALID, Verdict.INVALID: EXIT_INVALID,
         Verdict.UNKNOWN: EXIT_UNKNOWN}
_SEVERITY = [EXIT_VALID, EXIT_UNKNOWN, EXIT_INVALID, 143, 130, EXIT_CRASH]


def add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run a test against a store cluster in Docker",
                       description="Start a cluster of store containers, drive clients against "
                       "it while the nemesis breaks things, heal, check the history.")
    d = TestSpec.__dataclass_fields__
    p.add_argument("--name", default=d["name"].default, help="test name (run directory)")
    p.add_argument("--nodes", type=int, default=d["nodes"].default, help="cluster size (5)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="client workers (default: 2 per node)")
    p.add_argument("--rate", type=float, default=d["rate"].default,
                   help="total operations per second (100)")
    p.add_argument("--time-limit", type=float, default=d["time_limit"].default,
                   help="seconds of client load (60)")
    p.add_argument("--workload", choices=["register", "set"], default="register")
    p.add_argument("--nemesis", default="partition",
                   help="comma list of partition, kill, pause, clock, packet; or none")
    p.add_argument("--nemesis-interval", type=float, default=d["nemesis_interval"].default,
                   help="seconds between faults, and how long each lasts (10)")
    p.add_argument("--recovery-time", type=float, default=d["recovery_time"].default,
                   help="seconds to wait after healing before the final reads (10)")
    p.add_argument("--n", type=int, default=d["n"].default, help="replicas per key (3)")
    p.add_argument("--w", type=int, default=d["w"].default, help="write quorum (2)")
    p.add_argument("--r", type=int, default=d["r"].default, help="read quorum (2)")
    p.add_argument("--versioning", choices=["vclock", "lww"], default="vclock")
    p.add_argument("--expect", choices=GUARANTEES, default="",
                   help="the guarantee to judge (default: derived from n, w, r)")
    p.add_argument("--seed", type=int, help="random seed (default: random, recorded)")
    p.add_argument("--test-count", type=int, default=1, help="run the test this many times")
    p.add_argument("--leave-running", action="store_true",
                   help="keep the cluster after the test (remove it with kvcheck cleanup)")
    p.add_argument("--histories", type=Path, default=Path("histories"),
                   help="where run directories go (histories/)")
    p.set_defaults(handler=cmd_run)


def add_image(sub: Any) -> None:
    p = sub.add_parser("image", help="the store's container image")
    image = p.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = image.add_parser("build", help="build the store image if its inputs changed")
    build.add_argument("--base", choices=[b.value for b in Base], default=Base.AUTO.value,
                       help="auto: python:3.11-slim if present locally, else debootstrap")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(handler=cmd_image_build)


def add_cleanup(sub: Any) -> None:
    p = sub.add_parser("cleanup", help="remove the containers and networks of every run")
    p.set_defaults(handler=cmd_cleanup)


def cmd_image_build(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        build = build_image if args.force else ensure_image
        tag = build(connect(), find_project_root(), base=Base(args.base),
                    progress=lambda line: err.print(line, style="dim", markup=False,
                                                    highlight=False))
    except (EngineUnavailable, ImageError) as exc:
        err.print(f"[bold red]kvcheck image build:[/] {exc}", highlight=False)
        return EXIT_CRASH
    out.print(tag, markup=False, highlight=False)
    return EXIT_VALID


def cmd_cleanup(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        removed = cleanup(connect())
    except EngineUnavailable as exc:
        err.print(f"[bold red]kvcheck cleanup:[/] {exc}", highlight=False)
        return EXIT_CRASH
    out.print(f"removed {len(removed['containers'])} container(s) and "
              f"{len(removed['networks'])} network(s)")
    return EXIT_VALID


def spec_from(args: argparse.Namespace, index: int = 0) -> TestSpec:
    """The spec for the ``index``-th test of this command. Raises SpecError."""
    seed = {} if args.seed is None else {"seed": args.seed + index}
    return TestSpec(
        name=args.name, nodes=args.nodes, concurrency=args.concurrency, rate=args.rate,
        time_limit=args.time_limit, workload=args.workload,
        nemesis=tuple(k.strip() for k in args.nemesis.split(",") if k.strip()),
        nemesis_interval=args.nemesis_interval, recovery_time=args.recovery_time,
        n=args.n, w=args.w, r=args.r, versioning=args.versioning, expect=args.expect,
        leave_running=args.leave_running, **seed)


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        specs = [spec_from(args, i) for i in range(max(1, args.test_count))]
    except SpecError as exc:
        err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
        return EXIT_USAGE
    try:
        client = connect()
        image = ensure_image(client, find_project_root(),
                             progress=lambda line: err.print(line, style="dim", markup=False,
                                                             highlight=False))
    except (EngineUnavailable, ImageError) as exc:
        err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
        return EXIT_CRASH
    codes = []
    for spec in specs:
        code = _run_one(spec, client, image, args.histories, out, err)
        codes.append(code)
        if code in (130, 143):
            break
    return max(codes, key=_SEVERITY.index)


def _run_one(spec: TestSpec, client: Any, image: str, histories: Path, out: Console,
             err: Console) -> int:
    run_dir, run_id = new_run_dir(histories, spec.name)
    flags = [f"--n={spec.n}", f"--w={spec.w}", f"--r={spec.r}",
             f"--versioning={spec.versioning}", f"--request-timeout-ms={spec.request_timeout_ms}"]
    backend = DockerCluster(client, image, run_id, spec.node_ids, flags, run_dir)
    runner = Runner(spec, backend, run_dir)
    out.print(f"[bold]{spec.name}[/]: {spec.nodes} nodes, N={spec.n} W={spec.w} R={spec.r} "
              f"{spec.versioning}, {spec.workload} workload, nemesis "
              f"{','.join(spec.nemesis) or 'none'}, seed {spec.seed} → {run_dir}",
              highlight=False)
    try:
        trio.run(runner.run, _view(out, spec))
    except Interrupted as exc:
        err.print(f"kvcheck run: {exc}; the cluster was torn down. The history so far is in "
                  f"{run_dir}", highlight=False)
        return EXIT_INTERRUPTED[exc.signum]
    except BackendError as exc:
        err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
        return EXIT_CRASH
    if spec.leave_running:
        addresses = ", ".join(f"{n}={':'.join(map(str, backend.address(n)))}"
                              for n in backend.nodes)
        out.print(f"cluster left running ({addresses}); remove it with kvcheck cleanup")
    results = check_run(run_dir)
    write_report(run_dir)
    _summarise(out, spec, results, run_dir)
    return _EXIT[results.valid]


def _view(out: Console, spec: TestSpec) -> Any:
    """The live view: a status line that redraws on a terminal, a log line every 10 s in CI."""

    def line(progress: Progress) -> str:
        elapsed = time.monotonic() - progress.started
        counts = progress.history.counts if progress.history else {}
        faults = "; ".join(progress.faults) or "none"
        return (f"{progress.phase} · {elapsed:5.1f} s · ok {counts.get('ok', 0)} "
                f"fail {counts.get('fail', 0)} info {counts.get('info', 0)} · faults: {faults}")

    async def view(progress: Progress) -> None:
        if not out.is_terminal:
            while True:
                await trio.sleep(10)
                out.print(line(progress), highlight=False)
        with Live(console=out, refresh_per_second=4, transient=True) as live:
            while True:
                live.update(line(progress))
                await trio.sleep(0.25)

    return view


def _summarise(out: Console, spec: TestSpec, results: Any, run_dir: Path) -> None:
    out.print(f"expected guarantee: [bold]{spec.guarantee}[/]", highlight=False)
    print_results(out, results)
    out.print(f"verdict: [{STYLE[results.valid]}]{WORD[results.valid]}[/]  ·  "
              f"report: {run_dir / 'report.html'}", highlight=False)
