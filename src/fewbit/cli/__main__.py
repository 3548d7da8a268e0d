"""`python -m fewbit.cli` runs the CLI."""

import sys

from fewbit.cli import main

sys.exit(main())
