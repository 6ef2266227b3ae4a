"""``python -m forecast`` (and ``torchrun ... -m forecast train ...``) runs the command line."""

import sys

from forecast.cli.main import main

sys.exit(main())
