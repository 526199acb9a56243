"""``python -m restore`` runs the ``restore`` command."""

import sys

from restore.cli import main

sys.exit(main())
