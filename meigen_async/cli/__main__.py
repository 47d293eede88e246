"""`python -m meigen_async.cli`: the command line, as `python -m meigen_async` runs it."""

import sys

from ._main import main

sys.exit(main())
