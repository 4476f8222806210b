"""``python -m constcl_zoo`` is the ``constcl-zoo`` command."""

import sys

from .cli import main

sys.exit(main())
