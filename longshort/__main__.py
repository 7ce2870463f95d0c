"""``python -m longshort`` is the ``longshort`` command."""

import sys

from longshort.cli import main

sys.exit(main())
