"""Command line entry: ``python -m include.synthetic --out DIR --truth-dir DIR ...`` writes synthetic videos."""

import sys

from include.synthetic.generate import main

sys.exit(main())
