"""Keeps a live trading bot on its newest good ONNX model."""

import sys
from types import TracebackType

if sys.argv[:1] == ["-m"]:  # `python -m app` is locating this package: see app/__main__.py

    def _quiet_interrupt(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        """Ctrl-C while the interpreter imports this package ends it with no traceback."""
        if not issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)

    sys.excepthook = _quiet_interrupt
    from app.process import restore_interrupts

    restore_interrupts()

from loguru import logger  # after the hook, which must cover this import too

# A library adds no log sinks: the entry point (app.__main__) or the embedding host does.
logger.disable("app")

__all__: list[str] = []
