"""``python -m pycluster`` runs the ``pycluster`` command."""

import sys

from pycluster.cli import main

sys.exit(main())
