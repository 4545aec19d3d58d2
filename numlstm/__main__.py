"""``python -m numlstm``: see numlstm/cli.py."""

import sys

try:
    from .cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C while the command starts up (its handlers not yet set)
    sys.exit(130)
