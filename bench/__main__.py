"""`python -m bench`: the side-by-side harness (relay versus Postfix); see bench/README.md."""

import sys

from bench.harness import main

sys.exit(main())
