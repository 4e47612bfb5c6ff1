"""``python -m instabnn_hw`` runs the command line."""

import sys

from instabnn_hw.cli import main

sys.exit(main())
