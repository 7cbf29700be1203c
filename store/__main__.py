"""``python -m store`` runs the ``kvstore`` command."""

import sys

from store.cli import main

sys.exit(main())
