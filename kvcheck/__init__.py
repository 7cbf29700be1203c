"""kvcheck: a Jepsen-style verification harness with a reference Dynamo-style key-value store.

One import root over the repository's top-level folders:

- :mod:`kvcheck.store` — the reference store (the ``kvstore`` command);
- :mod:`kvcheck.harness` — running tests: backends, clients, workloads, runner, report, and the
  ``kvcheck`` command;
- :mod:`kvcheck.nemesis` — faults as plans that backends execute;
- :mod:`kvcheck.checkers` — verdicts computed from a history, importing neither of the above.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kvcheck")
except PackageNotFoundError:  # imported from a tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
