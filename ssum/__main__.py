"""`python -m ssum`: the same as the `ssum` command."""

import sys

from ssum.cli import main

sys.exit(main())
