"""``python -m harness`` runs the ``kvcheck`` command."""

import sys

from harness.cli import main

sys.exit(main())
