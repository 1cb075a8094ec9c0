"""Keeps a live trading bot on its newest good ONNX model.

The names in ``__all__`` are the embeddable surface (see the README, "Embedding in a larger
bot"); everything else may change. They are imported on first use, so ``import app`` (which
``python -m app`` does before it re-executes itself) loads neither aiohttp nor onnxruntime.
"""

# Imported under private names: every public name of this module is one of ``__all__``.
import importlib as _importlib
import sys as _sys
from types import TracebackType as _TracebackType
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _sys.argv[:1] == ["-m"]:  # `python -m app` is locating this package: see app/__main__.py

    def _quiet_interrupt(
        kind: type[BaseException], value: BaseException, tb: _TracebackType | None
    ) -> None:
        """Ctrl-C while the interpreter imports this package ends it with no traceback."""
        if not issubclass(kind, KeyboardInterrupt):
            _sys.__excepthook__(kind, value, tb)

    _sys.excepthook = _quiet_interrupt
    from app.process import restore_interrupts as _restore_interrupts

    _restore_interrupts()

from loguru import logger as _logger  # after the hook, which must cover this import too

if _TYPE_CHECKING:
    from app.brain.brain import TradingBrain
    from app.brain.decision import Decision
    from app.brain.models import SwapResult
    from app.containers import Core, resolve
    from app.errors import AppError, ConfigurationError, ModelError
    from app.services.sync import CloudModelSynchronizationService, SyncReport
    from app.settings import Settings, load_settings

# A library adds no log sinks: the entry point (app.__main__) or the embedding host does.
_logger.disable("app")

_EXPORTS = {
    "AppError": "app.errors",
    "CloudModelSynchronizationService": "app.services.sync",
    "ConfigurationError": "app.errors",
    "Core": "app.containers",
    "Decision": "app.brain.decision",
    "ModelError": "app.errors",
    "Settings": "app.settings",
    "SwapResult": "app.brain.models",
    "SyncReport": "app.services.sync",
    "TradingBrain": "app.brain.brain",
    "load_settings": "app.settings",
    "resolve": "app.containers",
}

__all__ = [
    "AppError",
    "CloudModelSynchronizationService",
    "ConfigurationError",
    "Core",
    "Decision",
    "ModelError",
    "Settings",
    "SwapResult",
    "SyncReport",
    "TradingBrain",
    "load_settings",
    "resolve",
]


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
