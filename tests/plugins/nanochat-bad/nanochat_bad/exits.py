"""A plugin module that exits the interpreter when imported."""

import sys

sys.exit(3)
