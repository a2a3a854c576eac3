"""``python -m funcsight.report --html PATH``: the ``funcsight report`` command on its own."""

import sys

from funcsight.report.cli import main

sys.exit(main())
