"""``python -m kvcheck`` runs the ``kvcheck`` command."""

import sys

from kvcheck.harness.cli import main

sys.exit(main())
