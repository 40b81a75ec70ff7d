"""`python -m sandmeter.cli ...`, as the console script runs it."""

import sys

from sandmeter.cli import main

sys.exit(main())
