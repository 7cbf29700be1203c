"""``python -m kvcheck.store`` runs the ``kvstore`` command."""

import sys

from kvcheck.store.cli import main

sys.exit(main())
