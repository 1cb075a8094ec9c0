"""`python -m app`: see app.cli."""

from app.process import reexec_with_malloc_tunables

reexec_with_malloc_tunables()

from app.cli import main  # noqa: E402 - only after the process is set up

raise SystemExit(main())
