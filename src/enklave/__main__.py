"""``python -m enklave``: the same as the ``enklave`` command."""

import sys

from enklave.cli import main

sys.exit(main())
