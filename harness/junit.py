"""JUnit XML for CI systems: one ``<testsuite>`` per run, one ``<testcase>`` per checker.

An invalid checker is a ``<failure>`` (its anomalies in words), an unknown one an ``<error>``;
a known-unsafe run (a canary, see :mod:`kvcheck.harness.suite`) is one case that passes when the run
was found invalid; a run that did not finish is one case, ``run``, in error. Text that XML 1.0
cannot carry (control characters) is replaced by ``?``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvcheck.checkers import Verdict

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LISTED = 20


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run, as JUnit sees it: its results (``results.json``'s content), or None with the
    exit code when it did not finish (no engine, a node would not start, interrupted)."""

    name: str
    run_dir: Path
    results: Mapping[str, Any] | None
    known_unsafe: bool = False
    exit_code: int = 0


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


def _suite(record: RunRecord) -> ET.Element:
    if record.results is None:
        return _unfinished(record)
    checkers = record.results.get("checkers", {})
    suite = ET.Element("testsuite", name=_clean(record.name))
    suite.set("hostname", _clean(record.run_dir))
    failures = errors = 0
    cases = ([("known-unsafe canary", {"valid": record.results.get("valid")})]
             if record.known_unsafe else list(checkers.items()))
    for name, check in cases:
        case = ET.SubElement(suite, "testcase", name=_clean(name),
                             classname=_clean(f"kvcheck.{record.name}"))
        case.set("time", str((check.get("figures") or {}).get("seconds", 0)))
        verdict = Verdict.read(check.get("valid"))
        if record.known_unsafe:
            if verdict is not Verdict.INVALID:
                failures += 1
                ET.SubElement(case, "failure", message=_clean(
                    f"known-unsafe configuration was found {verdict.value}: the checkers no "
                    "longer catch it")).text = _clean(record.run_dir)
        elif verdict is Verdict.INVALID:
            failures += 1
            counts = ", ".join(f"{k}: {v}" for k, v in (check.get("anomaly_counts") or {}).items())
            ET.SubElement(case, "failure", message=_clean(
                f"{verdict.value} ({counts or 'see results'})")).text = _clean(_anomalies(check))
        elif verdict is Verdict.UNKNOWN:
            errors += 1
            ET.SubElement(case, "error", message=_clean(
                f"{verdict.value}: {check.get('error') or 'the checker could not decide'}"))
        ET.SubElement(case, "system-out").text = _clean(f"run directory: {record.run_dir}")
    suite.set("tests", str(len(cases)))
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
