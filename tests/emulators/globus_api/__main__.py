"""``python -m globus_api``: the emulator service (same as the ``globus-api-emulator`` launcher)."""

import sys

from .cli import main

sys.exit(main())
