"""``python -m minicelery``: the command line (see :mod:`minicelery.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
