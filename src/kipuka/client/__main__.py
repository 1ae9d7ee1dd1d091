"""`python -m kipuka.client` runs the `kipuka-est` command."""

import sys

from kipuka.client.cli import main

sys.exit(main())
