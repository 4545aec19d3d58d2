"""``python -m numlstm``: see numlstm/cli.py."""

import sys

from .cli import main

sys.exit(main())
