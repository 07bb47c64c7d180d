"""Allow ``python -m bikes`` as an alias of the ``bikes`` command."""

import sys

from bikes.scripts import main

if __name__ == "__main__":
    sys.exit(main())
