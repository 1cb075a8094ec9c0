"""`python -m app`: see app.cli."""

try:
    from app.process import caused_by_interrupt, reexec_with_malloc_tunables

    reexec_with_malloc_tunables()

    from app.cli import main
except KeyboardInterrupt:  # Ctrl-C while the imports run: quietly, as app.cli does later
    raise SystemExit(130) from None
except ImportError as error:
    if not caused_by_interrupt(error):
        raise
    raise SystemExit(130) from None

raise SystemExit(main())
