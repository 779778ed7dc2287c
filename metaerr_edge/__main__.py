"""``python -m metaerr_edge`` is the ``metaerr-edge`` command."""

import sys

from metaerr_edge.cli import main

sys.exit(main())
