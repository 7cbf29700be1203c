"""JUnit XML for CI systems: one ``<testsuite>`` per run, one ``<testcase>`` per checker.

An invalid checker is a ``<failure>`` (its anomalies in words), an unknown one an ``<error>``
(with why), a store that crashed during the test one more failing case, ``store``;
a known-unsafe run (a canary, :mod:`kvcheck.harness.canary`) is one case, ``canary: <anomaly>``,
that passes only when the run was caught for the right reason (else a failure saying what
happened instead); any other run that did not finish is one case, ``run``, in error. Text that
XML 1.0 cannot carry (control characters) is replaced by ``?``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvcheck.checkers import Verdict
from kvcheck.harness.canary import CanaryOutcome, judge_canary

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LISTED = 20


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run: its results (``results.json``'s content), or None when it did not finish (no
    engine, a node would not start, interrupted); its exit code; the nodes that crashed during
    it; and, for a canary, the anomaly it must produce."""

    name: str
    run_dir: Path
    results: Mapping[str, Any] | None
    expect_anomaly: str | None = None
    exit_code: int = 0
    crashed: tuple[str, ...] = ()

    @property
    def canary(self) -> CanaryOutcome | None:
        """How the canary fared; None for a run that is not a canary."""
        if self.expect_anomaly is None:
            return None
        return judge_canary(self.expect_anomaly, self.results, self.exit_code, self.crashed)


def _clean(text: Any) -> str:
    return _NOT_XML.sub("?", str(text))


def _anomalies(check: Mapping[str, Any]) -> str:
    lines = [f"{a.get('kind')}: {a.get('message', '')} (ops {a.get('ops', [])[:20]})"
             for a in check.get("anomalies", [])[:_LISTED]]
    more = len(check.get("anomalies", [])) - _LISTED
    if more > 0:
        lines.append(f"... {more} more in results.json")
    return "\n".join(lines)


def _unfinished(record: RunRecord) -> ET.Element:
    suite = ET.Element("testsuite", name=_clean(record.name), tests="1", failures="0",
                       errors="1")
    case = ET.SubElement(suite, "testcase", name="run", classname=_clean(f"kvcheck.{record.name}"))
    ET.SubElement(case, "error", message=f"the test did not finish (exit {record.exit_code})"
                  ).text = _clean(f"run directory: {record.run_dir}")
    return suite


def _canary(record: RunRecord, outcome: CanaryOutcome) -> ET.Element:
    suite = ET.Element("testsuite", name=_clean(record.name), tests="1",
                       failures="0" if outcome.caught else "1", errors="0")
    suite.set("hostname", _clean(record.run_dir))
    case = ET.SubElement(suite, "testcase", name=_clean(f"canary: {record.expect_anomaly}"),
                         classname=_clean(f"kvcheck.{record.name}"))
    if not outcome.caught:
        ET.SubElement(case, "failure", message=_clean(outcome.message)).text = _clean(
            f"run directory: {record.run_dir}")
    ET.SubElement(case, "system-out").text = _clean(
        f"{outcome.message}\nrun directory: {record.run_dir}")
    return suite


def _suite(record: RunRecord) -> ET.Element:
    outcome = record.canary
    if outcome is not None:
        return _canary(record, outcome)
    if record.results is None:
        return _unfinished(record)
    checkers = record.results.get("checkers", {})
    suite = ET.Element("testsuite", name=_clean(record.name))
    suite.set("hostname", _clean(record.run_dir))
    failures = errors = 0
    cases = list(checkers.items())
    for name, check in cases:
        case = ET.SubElement(suite, "testcase", name=_clean(name),
                             classname=_clean(f"kvcheck.{record.name}"))
        case.set("time", str((check.get("figures") or {}).get("seconds", 0)))
        verdict = Verdict.read(check.get("valid"))
        if verdict is Verdict.INVALID:
            failures += 1
            counts = ", ".join(f"{k}: {v}" for k, v in (check.get("anomaly_counts") or {}).items())
            ET.SubElement(case, "failure", message=_clean(
                f"{verdict.value} ({counts or 'see results'})")).text = _clean(_anomalies(check))
        elif verdict is Verdict.UNKNOWN:
            errors += 1
            ET.SubElement(case, "error", message=_clean(
                f"{verdict.value}: "
                f"{check.get('error') or check.get('basis') or 'the checker could not decide'}"))
        ET.SubElement(case, "system-out").text = _clean(f"run directory: {record.run_dir}")
    if record.crashed:
        failures += 1
        case = ET.SubElement(suite, "testcase", name="store",
                             classname=_clean(f"kvcheck.{record.name}"))
        ET.SubElement(case, "failure", message=_clean(
            f"the store crashed on {', '.join(record.crashed)} during the test (it exited by "
            "itself)")).text = _clean(f"run directory: {record.run_dir}")
    suite.set("tests", str(len(cases) + bool(record.crashed)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    return suite


def write_junit(path: Path, records: Iterable[RunRecord]) -> Path:
    """Write ``<testsuites>`` for ``records`` to ``path`` (parents created); return the path.

    Raises OSError when the file cannot be written.
    """
    root = ET.Element("testsuites", name="kvcheck")
    for record in records:
        root.append(_suite(record))
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
