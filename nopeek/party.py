"""``python -m nopeek.party``: one party of a distributed run, for ``torchrun``.

A launcher of the command-line layer (like ``nopeek``): ``torchrun --nproc-per-node W -m
nopeek.party --out DIR [nopeek train flags]``. See :mod:`nopeek.cli.party`.
"""

import sys

if __name__ == "__main__":
    from nopeek.cli.party import main

    sys.exit(main())
