"""kvcheck's checkers: verdicts computed from a recorded history, as pure functions.

Nothing here imports the harness or the store. Inputs are files on disk (see
``docs/history-format.md``); each ``check_*`` returns a :class:`CheckResult` whose verdict is
valid, invalid or unknown (``docs/checkers.md`` says what each decides).
"""

from kvcheck.checkers.convergence import check_convergence
from kvcheck.checkers.edn import EDNError, Keyword, Symbol
from kvcheck.checkers.guarantees import (
    DEFAULT_CHECKERS,
    GUARANTEES,
    Guarantee,
    default_checkers,
    derived_guarantee,
)
from kvcheck.checkers.history import (
    Call,
    HistoryError,
    Op,
    TestConfig,
    iter_history,
    pair_calls,
    read_final_state,
    read_history,
    read_test_config,
    write_history,
)
from kvcheck.checkers.jepsen import read_jepsen_history
from kvcheck.checkers.linearizable import KeyResult, check_linearizable
from kvcheck.checkers.lost_writes import check_lost_writes
from kvcheck.checkers.models import CAS_REGISTER, MODELS, REGISTER, Model, Siblings, get_model
from kvcheck.checkers.result import (
    ANOMALY_KINDS,
    Anomaly,
    CheckResult,
    Results,
    Verdict,
    combine,
    write_results,
)
from kvcheck.checkers.stale_reads import check_stale_reads
from kvcheck.checkers.stats import check_stats, nemesis_windows
from kvcheck.checkers.suite import CHECKERS, check_history, check_run

__all__ = [
    "ANOMALY_KINDS",
    "CAS_REGISTER",
    "CHECKERS",
    "DEFAULT_CHECKERS",
    "GUARANTEES",
    "MODELS",
    "REGISTER",
    "Anomaly",
    "Call",
    "CheckResult",
    "EDNError",
    "Guarantee",
    "HistoryError",
    "KeyResult",
    "Keyword",
    "Model",
    "Op",
    "Results",
    "Siblings",
    "Symbol",
    "TestConfig",
    "Verdict",
    "check_convergence",
    "check_history",
    "check_linearizable",
    "check_lost_writes",
    "check_run",
    "check_stale_reads",
    "check_stats",
    "combine",
    "default_checkers",
    "derived_guarantee",
    "get_model",
    "iter_history",
    "nemesis_windows",
    "pair_calls",
    "read_final_state",
    "read_history",
    "read_jepsen_history",
    "read_test_config",
    "write_history",
    "write_results",
]
