"""The exit codes of every ``kvstore`` command, defined once (docs/store.md says what they mean).

``kvstore`` stands alone, so these are its own, not ``kvcheck``'s: a command that talks to a node
tells a missing key, a refused request, a store that could not serve it and a node that could
not be reached apart.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """An exit code of ``kvstore``."""

    OK = 0
    NOT_FOUND = 1  # get: no such key
    CANNOT_START = 1  # serve: damaged storage, or the address is taken
    USAGE = 2  # bad arguments or configuration, or a request the node rejected (argparse's 2)
    UNAVAILABLE = 3  # the store could not serve the request (no quorum)
    UNREACHABLE = 4  # the node could not be reached
    INTERRUPTED = 130  # Ctrl-C
