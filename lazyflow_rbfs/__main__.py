"""``python -m lazyflow_rbfs`` is the ``rbfs`` command line."""

import sys

from lazyflow_rbfs.cli import main

sys.exit(main())
