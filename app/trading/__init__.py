"""The trading loop: market bars, features, paper positions, the decision journal, replay.

Pure logic (features, positions, figures) imports neither onnxruntime nor aiohttp; the journal
and the feeds are the I/O edges. The names below are the embeddable surface (README:
"Embedding: reporting real outcomes"); everything else may change freely.
"""

from app.trading.bars import Bar, BarSeries, MarketDataError
from app.trading.csvbars import load_csv_bars, read_csv_bars
from app.trading.features import FEATURE_NAMES, WARMUP_BARS, FeatureEngine, feature_matrix
from app.trading.figures import VersionFigures, version_figures
from app.trading.journal import DecisionJournal, JournalCounts
from app.trading.outcomes import DecisionTicket, OutcomeReporter
from app.trading.positions import Performance, performance
from app.trading.synthetic import synthetic_bars, synthetic_bars_stream

__all__ = [
    "FEATURE_NAMES",
    "WARMUP_BARS",
    "Bar",
    "BarSeries",
    "DecisionJournal",
    "DecisionTicket",
    "FeatureEngine",
    "JournalCounts",
    "MarketDataError",
    "OutcomeReporter",
    "Performance",
    "VersionFigures",
    "feature_matrix",
    "load_csv_bars",
    "performance",
    "read_csv_bars",
    "synthetic_bars",
    "synthetic_bars_stream",
    "version_figures",
]
