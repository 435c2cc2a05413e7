"""``python -m fastbp``: the ``fastbp`` command (see ``fastbp.cli``)."""

import sys

from fastbp.cli import main

if __name__ == "__main__":
    sys.exit(main())
