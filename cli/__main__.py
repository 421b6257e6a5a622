"""``python -m maskahand.cli`` (and ``torchrun -m maskahand.cli``): the ``maskahand`` command."""

import sys

from .command import main

sys.exit(main())
