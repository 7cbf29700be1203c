"""Systems under test: the database and client contracts (:mod:`.interface`), their loading, and
client errors in plain words (:mod:`.errors`).

``--db NAME`` names a built-in adapter (:data:`BUILTIN`) or a user's own, as
``package.module:factory``: a callable without arguments (usually a :class:`Database` subclass)
importable from where kvcheck runs. ``--db-opt KEY=VALUE`` settings are checked against the
adapter's :attr:`Database.options` and completed with their defaults (:func:`resolve_options`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator, Mapping, Sequence

from kvcheck.harness.databases.errors import describe_error, error_detail
from kvcheck.harness.databases.interface import (
    Capability,
    Client,
    Cluster,
    Completion,
    Database,
    DatabaseError,
    Fail,
    Info,
    NodeImage,
    Ok,
    Operation,
    Option,
    Process,
)
from kvcheck.nemesis import KINDS, SIMULATED_ONLY

#: The adapters kvcheck ships: ``--db`` name → ``module:factory``.
BUILTIN = {
    "kvstore": "kvcheck.harness.databases.kvstore:KvStore",
    "etcd": "kvcheck.harness.databases.etcd:Etcd",
    "redis": "kvcheck.harness.databases.redis:Redis",
}

#: Checkers that need a capability of the database, and what it is.
CHECKER_NEEDS = {"convergence": Capability.REPLICA_STATE}

__all__ = [
    "BUILTIN",
    "CHECKER_NEEDS",
    "Capability",
    "Client",
    "Cluster",
    "Completion",
    "Database",
    "DatabaseError",
    "Fail",
    "Info",
    "NodeImage",
    "Ok",
    "Operation",
    "Option",
    "Process",
    "describe",
    "describe_error",
    "error_detail",
    "guard",
    "load",
    "resolve_options",
]


@functools.cache
def load(name: str) -> Database:
    """The database ``name`` names: a built-in one, or ``package.module:factory``.

    Raises :class:`DatabaseError`, naming what is wrong, when the name is unknown, the module
    cannot be imported, the factory is missing or raises, or it returns something else than a
    :class:`Database` with a name.
    """
    target = BUILTIN.get(name, name)
    module_name, colon, factory_name = target.partition(":")
    if not colon or not module_name or not factory_name:
        raise DatabaseError(f"unknown database {name!r}: the built-in ones are "
                            f"{', '.join(BUILTIN)}; a database of your own is "
                            "package.module:factory (kvcheck run --db help)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an adapter's import may raise anything
        raise DatabaseError(f"cannot import {module_name} for --db {name}: "
                            f"{type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise DatabaseError(f"{module_name} has no callable {factory_name} (--db {name})")
    try:
        database = factory()
    except Exception as exc:
        raise DatabaseError(f"{target}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(database, Database) or not database.name:
        raise DatabaseError(f"{target}() returned {type(database).__name__}, not a Database "
                            "with a name (kvcheck.harness.databases.Database)")
    return database


@contextlib.contextmanager
def guard(call: str) -> Iterator[None]:
    """Run an adapter's ``call`` (named as it should read in an error, e.g. ``ready('n1')``):
    whatever it raises, but :class:`DatabaseError` and cancellation, is its bug and becomes a
    :class:`DatabaseError` that says so — the run stops with a clear error, never a traceback."""
    try:
        yield
    except DatabaseError:
        raise
    except Exception as exc:
        raise DatabaseError(f"{call} raised {type(exc).__name__}: {exc}") from exc


def resolve_options(database: Database, given: Mapping[str, str]) -> dict[str, str]:
    """Every option of ``database``: the ``given`` values, else the defaults.

    Raises :class:`DatabaseError` for a key the database does not take (naming those it does)
    or a value not among an option's choices.
    """
    accepted = {option.name: option for option in database.options}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "none"
        raise DatabaseError(f"{database.name} takes no option {', '.join(unknown)} "
                            f"(--db-opt; it takes: {takes})")
    resolved = {}
    for option in database.options:
        value = given.get(option.name, option.default)
        if option.choices and value not in option.choices:
            raise DatabaseError(f"--db-opt {option.name} must be one of "
                                f"{', '.join(option.choices)}, not {value!r}")
        resolved[option.name] = value
    return resolved


def describe(names: Sequence[str] = tuple(BUILTIN)) -> str:
    """``kvcheck run --db help``: each database, its options, the faults it can undergo and
    what it can do beyond the contract, in plain text."""
    blocks = []
    for name in names:
        database = load(name)
        lines = [f"{name}: {database.description}"]
        for option in database.options:
            choices = f" ({' | '.join(option.choices)})" if option.choices else ""
            lines.append(f"  --db-opt {option.name}=VALUE{choices}: {option.help} "
                         f"(default: {option.default})")
        faults = [k for k in KINDS
                  if k not in database.unsupported_faults and k not in SIMULATED_ONLY]
        lines.append(f"  faults: {', '.join(faults) or 'none'}")
        if name == "kvstore":  # the one database the simulator runs
            lines.append(f"  faults with --backend sim also: {', '.join(SIMULATED_ONLY)}")
        for kind, why in database.unsupported_faults.items():
            lines.append(f"  not {kind}: {why}")
        can = ", ".join(c.doing for c in Capability if c in database.capabilities)
        lines.append(f"  can also: {can or 'nothing more'}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
