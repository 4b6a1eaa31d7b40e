"""Run the imcc command line: `python -m imcc`."""

from __future__ import annotations

import sys

from imcc.cli import main

sys.exit(main())
