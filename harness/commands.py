"""``kvcheck run``, ``suite``, ``report``, ``serve``, ``cluster up``, ``image build`` and
``cleanup``.

Exit codes of ``run``: 0 the expected guarantee held, 1 it did not, 2 undecided (unknown),
254 bad arguments, 255 the test could not run (no Docker engine, image build failed, a node
would not start) or crashed; 130 / 143 interrupted by SIGINT / SIGTERM (the cluster is torn down
first). With ``--test-count`` the worst outcome wins.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from kvcheck.checkers import Results, Verdict, check_run
from kvcheck.harness.autoscale import ABOVE, BELOW, SUSTAIN, Policy, PolicyError, autoscale
from kvcheck.harness.backend import BackendError
from kvcheck.harness.docker_cluster import DockerCluster, cleanup
from kvcheck.harness.engine import EngineUnavailable, connect
from kvcheck.harness.image import (
    Base,
    ImageError,
    build_image,
    ensure_image,
    remove_stale_images,
)
from kvcheck.harness.junit import RunRecord, write_junit
from kvcheck.harness.package import PackageError
from kvcheck.harness.report import write_report
from kvcheck.harness.runner import (
    EXIT_INTERRUPTED,
    Interrupted,
    Progress,
    Runner,
    new_run_dir,
    new_run_id,
)
from kvcheck.harness.serve import make_server
from kvcheck.harness.spec import GUARANTEES, SpecError, TestSpec
from kvcheck.harness.suite import SuiteError, load_suite, passed, suite_exit
from kvcheck.harness.verdicts import STYLE, WORD, print_results

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
                   help="comma list of partition, kill, pause, clock, packet, membership; "
                   "or none")
    p.add_argument("--nemesis-interval", type=float, default=d["nemesis_interval"].default,
                   help="seconds between faults, and how long each lasts (10)")
    p.add_argument("--recovery-time", type=float, default=d["recovery_time"].default,
                   help="seconds to wait after healing before the final reads (10)")
    p.add_argument("--n", type=int, default=d["n"].default, help="replicas per key (3)")
    p.add_argument("--w", type=int, default=d["w"].default, help="write quorum (2)")
    p.add_argument("--r", type=int, default=d["r"].default, help="read quorum (2)")
    p.add_argument("--versioning", choices=["vclock", "lww"], default="vclock")
    p.add_argument("--sloppy-quorum", action=argparse.BooleanOptionalAction,
                   default=d["sloppy_quorum"].default,
                   help="sloppy quorums and hinted handoff (the store's default); "
                   "--no-sloppy-quorum makes quorums strict, so W + R > N expects no stale reads")
    p.add_argument("--expect", choices=GUARANTEES, default="",
                   help="the guarantee to judge (default: derived from n, w, r)")
    p.add_argument("--seed", type=int, help="random seed (default: random, recorded)")
    p.add_argument("--test-count", type=int, default=1, help="run the test this many times")
    p.add_argument("--leave-running", action=argparse.BooleanOptionalAction, default=False,
                   help="keep the cluster after the test (remove it with kvcheck cleanup)")
    p.add_argument("--histories", type=Path, default=Path("histories"),
                   help="where run directories go (histories/)")
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="also write a JUnit XML file: one test case per checker")
    p.set_defaults(handler=cmd_run)


def add_suite(sub: Any) -> None:
    p = sub.add_parser("suite", help="run the named tests of a suite file one after another",
                       description="Run each [[test]] of a TOML suite file (see docs/ci.md). "
                       "Exit 0 when every guarantee held and every known-unsafe test was "
                       "found invalid, 1 when not, 2 undecided, 255 a test could not run.")
    p.add_argument("file", type=Path, metavar="FILE.toml")
    p.add_argument("--histories", type=Path, default=Path("histories"),
                   help="where run directories go (histories/)")
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="write a JUnit XML file for the whole suite")
    p.add_argument("--only", default="", metavar="A,B", help="run only these tests")
    p.add_argument("--list", action="store_true",
                   help="print each test's kvcheck run arguments and exit")
    p.set_defaults(handler=cmd_suite)


def add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="regenerate a run's report.html from its files",
                       description="Write RUN_DIR/report.html again from test.json, "
                       "results.json, history.jsonl and final-state.json.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.set_defaults(handler=cmd_report)


def add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="browse past runs over HTTP",
                       description="Serve the runs under --histories, newest first, with "
                       "their reports and files (read-only; nothing outside --histories).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (8080; 0 picks a free one)")
    p.add_argument("--histories", type=Path, default=Path("histories"),
                   help="the directory of runs (histories/)")
    p.set_defaults(handler=cmd_serve)


def add_cluster(sub: Any) -> None:
    p = sub.add_parser("cluster", help="run a store cluster in Docker, optionally autoscaled")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up", help="start a cluster and keep it until Ctrl-C (or --duration)",
        description="Start a cluster of store containers and print where its nodes listen. "
        "With --autoscale MIN..MAX, add a node (join) when the requests per second per node "
        "stay above --scale-up-above, and remove one (leave) when they stay below "
        "--scale-down-below; every decision is printed and logged to autoscale.jsonl in the "
        "cluster's directory. Ctrl-C or SIGTERM tears everything down (exit 0).")
    up.add_argument("--nodes", type=int, default=3, help="nodes to start with (3)")
    up.add_argument("--autoscale", metavar="MIN..MAX", help="scale between MIN and MAX nodes")
    up.add_argument("--scale-up-above", type=float, default=ABOVE,
                    help=f"requests/s per node that add a node (default {ABOVE:g})")
    up.add_argument("--scale-down-below", type=float, default=BELOW,
                    help=f"requests/s per node that remove one (default {BELOW:g})")
    up.add_argument("--sustain", type=int, default=SUSTAIN,
                    help=f"consecutive windows the load must stay past a threshold "
                    f"(default {SUSTAIN})")
    up.add_argument("--window", type=float, default=5.0,
                    help="seconds per load measurement (default 5)")
    up.add_argument("--duration", type=float, help="tear down after this many seconds")
    up.add_argument("--n", type=int, default=3, help="replicas per key (3)")
    up.add_argument("--w", type=int, default=2, help="write quorum (2)")
    up.add_argument("--r", type=int, default=2, help="read quorum (2)")
    up.add_argument("--sloppy-quorum", action=argparse.BooleanOptionalAction, default=True,
                    help="sloppy quorums and hinted handoff (default: on, as the store)")
    up.add_argument("--histories", type=Path, default=Path("histories"),
                    help="the cluster's directory goes under HISTORIES/clusters/")
    up.set_defaults(handler=cmd_cluster_up)


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
        tag = build(connect(), base=Base(args.base),
                    progress=lambda line: err.print(line, style="dim", markup=False,
                                                    highlight=False))
    except (EngineUnavailable, ImageError, PackageError) as exc:
        err.print(f"[bold red]kvcheck image build:[/] {exc}", highlight=False)
        return EXIT_CRASH
    out.print(tag, markup=False, highlight=False)
    return EXIT_VALID


def cmd_cleanup(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        client = connect()
        removed = cleanup(client)
        images = remove_stale_images(client)
    except (EngineUnavailable, ImageError, PackageError) as exc:
        err.print(f"[bold red]kvcheck cleanup:[/] {exc}", highlight=False)
        return EXIT_CRASH
    out.print(f"removed {len(removed['containers'])} container(s), "
              f"{len(removed['networks'])} network(s) and {len(images)} outdated store "
              "image(s)")
    return EXIT_VALID


def cmd_cluster_up(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        spec = TestSpec(name="cluster", nodes=args.nodes, n=args.n, w=args.w, r=args.r,
                        sloppy_quorum=args.sloppy_quorum, nemesis=())
        policy = None
        if args.autoscale:
            low, high = Policy.parse_range(args.autoscale)
            policy = Policy(low, high, args.scale_up_above, args.scale_down_below, args.sustain)
            if low < spec.n:
                raise PolicyError(f"--autoscale MIN ({low}) must be at least --n ({spec.n})")
        if args.window <= 0 or (args.duration is not None and args.duration <= 0):
            raise PolicyError("--window and --duration must be positive")
    except (SpecError, PolicyError) as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] {exc}", highlight=False)
        return EXIT_USAGE
    _, run_id = new_run_id()
    cluster_dir = args.histories / "clusters" / run_id
    try:
        cluster_dir.mkdir(parents=True)
        client = connect()
        image = ensure_image(client, progress=lambda line: err.print(
            line, style="dim", markup=False, highlight=False))
    except OSError as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] cannot create {cluster_dir}: "
                  f"{exc.strerror or exc}", highlight=False)
        return EXIT_USAGE
    except (EngineUnavailable, ImageError, PackageError) as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] {exc}", highlight=False)
        return EXIT_CRASH
    backend = DockerCluster(client, image, run_id, spec.node_ids, spec.store_flags(),
                            cluster_dir)

    def say(line: str) -> None:
        out.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        trio.run(_cluster_up, backend, policy, args, cluster_dir, say)
    except BackendError as exc:
        err.print(f"[bold red]kvcheck cluster up:[/] {exc}", highlight=False)
        return EXIT_CRASH
    say(f"cluster torn down; its logs are in {cluster_dir}")
    return EXIT_VALID


async def _cluster_up(backend: DockerCluster, policy: Policy | None, args: argparse.Namespace,
                      cluster_dir: Path, say: Callable[[str], None]) -> None:
    """Set up, print the addresses, autoscale until a signal or the duration; tear down."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
            await backend.setup()

            def publish(members: list[str]) -> None:
                """``cluster.json``: the members and their addresses, replaced atomically."""
                addresses = {n: "{}:{}".format(*backend.address(n)) for n in members}
                temporary = cluster_dir / "cluster.json.tmp"
                temporary.write_text(json.dumps({"nodes": addresses}) + "\n")
                temporary.replace(cluster_dir / "cluster.json")

            publish(backend.nodes)
            say("cluster up: " + ", ".join("{}={}:{}".format(n, *backend.address(n))
                                           for n in backend.nodes) + " · Ctrl-C to tear down")
            if policy is not None:
                nursery.start_soon(autoscale, backend, policy, args.window,
                                   cluster_dir / "autoscale.jsonl", say, publish)
            if args.duration is not None:
                await trio.sleep(args.duration)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await backend.teardown()


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def spec_from(args: argparse.Namespace, index: int = 0) -> TestSpec:
    """The spec for the ``index``-th test of this command. Raises SpecError."""
    seed = {} if args.seed is None else {"seed": args.seed + index}
    return TestSpec(
        name=args.name, nodes=args.nodes, concurrency=args.concurrency, rate=args.rate,
        time_limit=args.time_limit, workload=args.workload,
        nemesis=tuple(k.strip() for k in args.nemesis.split(",") if k.strip()),
        nemesis_interval=args.nemesis_interval, recovery_time=args.recovery_time,
        n=args.n, w=args.w, r=args.r, versioning=args.versioning,
        sloppy_quorum=args.sloppy_quorum, expect=args.expect,
        leave_running=args.leave_running, **seed)


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    code, records = run_tests(args, out, err)
    if args.junit and records:
        out.print(f"JUnit: {write_junit(args.junit, records)}", markup=False, highlight=False)
    return code


def run_tests(args: argparse.Namespace, out: Console, err: Console,
              known_unsafe: bool = False) -> tuple[int, list[RunRecord]]:
    """Run the tests ``args`` describe; return the worst exit code and a record of each run
    (none for bad arguments)."""
    try:
        specs = [spec_from(args, i) for i in range(max(1, args.test_count))]
    except SpecError as exc:
        err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
        return EXIT_USAGE, []
    try:
        args.histories.mkdir(parents=True, exist_ok=True)
        if not os.access(args.histories, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        err.print(f"[bold red]kvcheck run:[/] cannot keep runs in {args.histories}: "
                  f"{exc.strerror or exc}; choose another place with --histories",
                  highlight=False)
        return EXIT_USAGE, []
    try:
        client = connect()
        image = ensure_image(client, progress=lambda line: err.print(
            line, style="dim", markup=False, highlight=False))
    except (EngineUnavailable, ImageError, PackageError) as exc:
        err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
        return EXIT_CRASH, [RunRecord(s.name, args.histories, None, known_unsafe, EXIT_CRASH)
                            for s in specs]
    codes, records = [], []
    for spec in specs:
        code, results, run_dir = _run_one(spec, client, image, args.histories, out, err)
        codes.append(code)
        records.append(RunRecord(spec.name, run_dir, results and results.to_json(),
                                 known_unsafe, code))
        if code in (130, 143):
            break
    return max(codes, key=_SEVERITY.index), records


def _run_one(spec: TestSpec, client: Any, image: str, histories: Path, out: Console,
             err: Console) -> tuple[int, Results | None, Path]:
    """Run one test; return its exit code, its results (None if it did not finish) and dir."""
    run_dir, run_id = new_run_dir(histories, spec.name)
    backend = DockerCluster(client, image, run_id, spec.node_ids, spec.store_flags(), run_dir)
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
        return EXIT_INTERRUPTED[exc.signum], None, run_dir
    except BackendError as exc:
        err.print(f"[bold red]kvcheck run:[/] {exc}", highlight=False)
        return EXIT_CRASH, None, run_dir
    if spec.leave_running:
        addresses = ", ".join(f"{n}={':'.join(map(str, backend.address(n)))}"
                              for n in backend.nodes)
        out.print(f"cluster left running ({addresses}); remove it with kvcheck cleanup")
    results = check_run(run_dir)
    write_report(run_dir)
    _summarise(out, spec, results, run_dir)
    if runner.crashed:
        err.print(f"[bold red]kvcheck run:[/] the store crashed on "
                  f"{', '.join(sorted(set(runner.crashed)))} during the test (it exited by "
                  f"itself; see nodes/<node>/kvstore.log in {run_dir}): invalid", highlight=False)
        return EXIT_INVALID, results, run_dir
    return _EXIT[results.valid], results, run_dir


def cmd_suite(args: argparse.Namespace, out: Console, err: Console) -> int:
    parser = argparse.ArgumentParser(prog="kvcheck run", exit_on_error=False, add_help=False)
    add_run(parser.add_subparsers())
    parse = _quiet_parse(parser)
    try:
        tests = load_suite(args.file, lambda argv: parse(["run", *argv]))
    except SuiteError as exc:
        err.print(f"kvcheck suite: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {t.name for t in tests}
    if unknown:
        err.print(f"kvcheck suite: no such test(s): {', '.join(sorted(unknown))}",
                  markup=False, highlight=False)
        return EXIT_USAGE
    tests = [t for t in tests if not only or t.name in only]
    if args.list:
        for t in tests:
            unsafe = "  # known-unsafe" if t.known_unsafe else ""
            out.print(f"{t.name}: kvcheck run {' '.join(t.argv)}{unsafe}", markup=False,
                      highlight=False, soft_wrap=True)
        return EXIT_VALID
    codes, records = [], []
    for t in tests:
        out.print(f"[bold]suite test {t.name}[/]"
                  f"{' (known-unsafe: must be found invalid)' if t.known_unsafe else ''}",
                  highlight=False)
        run_args = parse(["run", *t.argv, "--histories", str(args.histories)])
        code, found = run_tests(run_args, out, err, known_unsafe=t.known_unsafe)
        codes.append(code)
        records += found
        if code in (130, 143):
            break
    ran = tests[:len(codes)]
    if args.junit:
        out.print(f"JUnit: {write_junit(args.junit, records)}", markup=False, highlight=False)
    for t, code in zip(ran, codes, strict=True):
        word = "[green]passed[/]" if passed(t, code) else "[bold red]FAILED[/]"
        out.print(f"{word} {escape(t.name)} (exit {code})", highlight=False)
    return suite_exit(ran, codes)


def _quiet_parse(parser: argparse.ArgumentParser) -> Any:
    """``parser.parse_args`` raising SystemExit on bad arguments (argv checked by load_suite)."""

    def parse(argv: list[str]) -> argparse.Namespace:
        try:
            return parser.parse_args(argv)
        except argparse.ArgumentError as exc:
            raise SystemExit(EXIT_USAGE) from exc

    return parse


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    code = EXIT_VALID
    for run_dir in args.run_dirs:
        try:
            out.print(str(write_report(run_dir)), markup=False, highlight=False)
        except (OSError, ValueError) as exc:
            err.print(f"kvcheck report: {run_dir}: {exc}", markup=False, highlight=False)
            code = EXIT_USAGE
    return code


def cmd_serve(args: argparse.Namespace, out: Console, err: Console) -> int:
    if not args.histories.is_dir():
        err.print(f"kvcheck serve: no such directory: {args.histories}", markup=False)
        return EXIT_USAGE
    try:
        server = make_server(args.histories, args.host, args.port)
    except OSError as exc:
        err.print(f"kvcheck serve: cannot listen on {args.host}:{args.port}: {exc}",
                  markup=False)
        return EXIT_USAGE
    host, port = server.server_address[:2]
    out.print(f"serving {args.histories} on http://{host}:{port}/ (Ctrl-C stops)",
              markup=False, highlight=False)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            return EXIT_VALID
    return EXIT_VALID


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
