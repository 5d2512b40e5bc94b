"""`python -m gradstep` runs the command line."""

from .cli import main

raise SystemExit(main())
