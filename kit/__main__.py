"""``python -m kit``: the ``kit`` command, for when the console script is not on ``PATH``."""

import sys

from kit.cli import main

if __name__ == "__main__":
    sys.exit(main())
