"""`python -m python_udf` is the `text-features` command."""

import sys

from .cli import main

sys.exit(main())
