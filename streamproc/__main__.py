"""``python -m streamproc``: the same as the ``streamproc`` command."""

import sys

from streamproc.apps.cli import main

sys.exit(main())
