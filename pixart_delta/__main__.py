"""`python -m pixart_delta`: the command line (pixart_delta/tools/cli.py)."""
import sys

from .tools.cli import main

sys.exit(main())
