"""The decision journal: every decision and outcome in an embedded SQLite database.

Writes never touch the caller's thread beyond appending a tuple to a queue: a writer thread
commits them in batches (WAL, ``synchronous=NORMAL``), so the journal never slows ``decide()``.
A full disk, a locked database or any other SQLite failure becomes one warning and a counter:
the rows wait (up to ``max_pending``, then the oldest are dropped and counted) and the host
goes on deciding. Retention is bounded by market time (``retention_days`` behind the newest
bar) and by row count (``max_rows`` per table). Schema: see :data:`SCHEMA` and the README.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from loguru import logger

from app.brain.decision import Decision
from app.trading.positions import BarOutcome, ClosedTrade

JOURNAL_FILE = "journal.sqlite3"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id          INTEGER PRIMARY KEY,
    bar_time    REAL NOT NULL,     -- market time of the bar decided on, Unix seconds (UTC)
    recorded_at REAL NOT NULL,     -- wall-clock time the decision was made
    slot        TEXT NOT NULL,     -- the decision slot
    version     TEXT NOT NULL,     -- the decision slot's model version
    versions    TEXT NOT NULL,     -- JSON {slot: version} of every slot in the snapshot
    role        TEXT NOT NULL,     -- champion | shadow
    action      TEXT NOT NULL,     -- sell | hold | buy
    confidence  REAL NOT NULL,
    p_sell      REAL NOT NULL,
    p_hold      REAL NOT NULL,
    p_buy       REAL NOT NULL,
    close       REAL,              -- the bar's close: replay --journal prices from it
    features    BLOB NOT NULL      -- float32 little-endian, in brain.features order
);
CREATE INDEX IF NOT EXISTS decisions_by_version ON decisions (version, role);
CREATE TABLE IF NOT EXISTS outcomes (
    id           INTEGER PRIMARY KEY,
    bar_time     REAL NOT NULL,    -- market time of the deciding bar (a trade: when it closed)
    version      TEXT NOT NULL,    -- the version that decided
    role         TEXT NOT NULL,
    source       TEXT NOT NULL,    -- paper (the host's positions) | reported (a bot's fills)
    kind         TEXT NOT NULL,    -- bar (one decision's return) | trade (a closed trade)
    position     INTEGER NOT NULL,
    gross_return REAL,
    net_return   REAL NOT NULL,
    opened_at    REAL              -- a trade's opening time
);
CREATE INDEX IF NOT EXISTS outcomes_by_version ON outcomes (version, role, source, kind);
CREATE TABLE IF NOT EXISTS transitions (
    id           INTEGER PRIMARY KEY,
    bar_time     REAL,             -- market time of the bar it happened at (None: at start-up)
    recorded_at  REAL NOT NULL,
    slot         TEXT NOT NULL,
    from_stage   TEXT,             -- shadow | canary | champion (None: a first stage)
    to_stage     TEXT NOT NULL,
    candidate    TEXT,             -- the version being judged
    incumbent    TEXT,             -- the champion's version
    verdict      TEXT NOT NULL,    -- pending | pass | fail | inconclusive
    rule         TEXT,             -- what decided it (the judge's rule, or by_hand)
    reason       TEXT,
    figures      TEXT NOT NULL     -- JSON: the paired metrics that decided it
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_INSERT_DECISION = (
    "INSERT INTO decisions (bar_time, recorded_at, slot, version, versions, role, action, "
    "confidence, p_sell, p_hold, p_buy, close, features) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (bar_time, version, role, source, kind, position, gross_return, "
    "net_return, opened_at) VALUES (?,?,?,?,?,?,?,?,?)"
)
_INSERT_TRANSITION = (
    "INSERT INTO transitions (bar_time, recorded_at, slot, from_stage, to_stage, candidate, "
    "incumbent, verdict, rule, reason, figures) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_BATCH = 5000
_PRUNE_SECONDS = 60.0

Connect = Callable[[Path, float], sqlite3.Connection]


def connect(path: Path, busy_timeout_seconds: float) -> sqlite3.Connection:
    """A connection in WAL mode; waits at most `busy_timeout_seconds` on a lock."""
    connection = sqlite3.connect(
        path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class Transition(NamedTuple):
    """One change of a model's stage (the seed's ParameterChangeTracker entry)."""

    bar_time: float | None
    recorded_at: float
    slot: str
    from_stage: str | None
    to_stage: str
    candidate: str | None
    incumbent: str | None
    verdict: str
    rule: str | None
    reason: str | None
    figures: dict[str, Any]


class JournalCounts(NamedTuple):
    """What the journal has done so far (for /metrics and tests)."""

    written: int
    dropped: int
    write_errors: int
    pending: int


class DecisionJournal:
    """Decisions and outcomes, journaled off the caller's thread."""

    def __init__(
        self,
        path: Path,
        *,
        decision_slot: str = "unified_brain",
        retention_days: float = 30,
        max_rows: int = 1_000_000,
        flush_seconds: float = 0.25,
        busy_timeout_seconds: float = 1.0,
        max_pending: int = 100_000,
        connector: Connect = connect,
    ) -> None:
        self.path = path
        self._slot = decision_slot
        self._retention_seconds = retention_days * 86400
        self._max_rows = max_rows
        self._flush_seconds = flush_seconds
        self._busy_timeout = busy_timeout_seconds
        self._max_pending = max_pending
        self._connector = connector
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._moving = threading.Lock()  # the writer moving rows between queue and batch
        self._connection: sqlite3.Connection | None = None
        self._written = 0
        self._dropped = 0
        self._errors = 0
        self._failing: str | None = None
        self._last_prune = 0.0
        self._since_prune = 0
        self._in_flight = 0
        self._versions: object = None
        self._versions_json = "{}"

    # -- writing (any thread; O(1), never blocks) ------------------------------------------

    def record_decision(
        self,
        bar_time: float,
        close: float | None,
        features: np.ndarray,
        decision: Decision,
        role: str = "champion",
    ) -> None:
        """Journal one decision; `features` is the row it was made on (not modified after)."""
        self._enqueue("d", (bar_time, time.time(), decision, features, close, role))

    def record_outcome(
        self,
        bar_time: float,
        version: str,
        *,
        net_return: float,
        gross_return: float | None = None,
        position: int = 0,
        role: str = "champion",
        source: str = "paper",
        kind: str = "bar",
        opened_at: float | None = None,
    ) -> None:
        """Journal what a decision (kind ``bar``) or a closed trade (``trade``) returned."""
        row = (bar_time, version, role, source, kind, position, gross_return, net_return, opened_at)
        self._enqueue("o", row)

    def record_transition(self, transition: Transition) -> None:
        """Journal a model's change of stage, with the figures that decided it."""
        self._enqueue("t", (*transition[:-1], json.dumps(transition.figures, sort_keys=True)))

    def record_bar(self, outcome: BarOutcome, version: str, *, role: str = "champion") -> None:
        """Journal what a paper position earned over one bar (the version that decided it)."""
        self.record_outcome(
            outcome.decided_at,
            version,
            net_return=outcome.net_return,
            gross_return=outcome.gross_return,
            position=outcome.position,
            role=role,
        )

    def record_trade(self, trade: ClosedTrade, version: str, *, role: str = "champion") -> None:
        """Journal a closed paper trade (the version that opened it)."""
        self.record_outcome(
            trade.closed_at,
            version,
            net_return=trade.net_return,
            position=trade.position,
            role=role,
            kind="trade",
            opened_at=trade.opened_at,
        )

    def _enqueue(self, kind: str, row: tuple[Any, ...]) -> None:
        if self._thread is None:
            self._start()
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._dropped += 1
        self._pending.append((kind, row))

    @property
    def counts(self) -> JournalCounts:
        with self._moving:
            pending = len(self._pending) + self._in_flight
        return JournalCounts(self._written, self._dropped, self._errors, pending)

    def _unwritten(self) -> int:
        with self._moving:
            return len(self._pending) + self._in_flight

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._unwritten():
            if self._thread is None or not self._thread.is_alive():
                return not self._pending
            self._wake.set()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Write what is pending, prune, and stop the writer thread."""
        thread = self._thread
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join()
            self._thread = None
            self._stopping.clear()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- the writer thread -----------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="decision-journal", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            stopping = self._stopping.is_set()
            while self._pending:
                if not self._write_batch():
                    self._stopping.wait(min(1.0, self._flush_seconds * 4))  # back off
                    break
            if stopping:
                self._prune(force=True)
                if self._pending:
                    logger.warning(
                        f"⚠️ [JOURNAL] Stopping with {len(self._pending)} row(s) not written "
                        f"to {self.path.name}"
                    )
                return

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = self._connector(self.path, self._busy_timeout)
            try:
                connection.executescript(SCHEMA)
                connection.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _write_batch(self) -> bool:
        """Write up to one batch; False when it failed (the rows are kept for the next try)."""
        batch: list[tuple[str, tuple[Any, ...]]] = []
        pending = self._pending
        with self._moving:  # counts() and flush() never see a row in both places, or neither
            while pending and len(batch) < _BATCH:
                batch.append(pending.popleft())
            self._in_flight = len(batch)
        try:
            decisions = [self._decision_row(row) for kind, row in batch if kind == "d"]
        except Exception as error:  # a row no retry can write: drop the batch, keep the thread
            logger.opt(exception=error).error(f"❌ [JOURNAL] Dropped {len(batch)} unwritable rows")
            with self._moving:
                self._dropped += len(batch)
                self._errors += 1
                self._in_flight = 0
            return True
        outcomes = [row for kind, row in batch if kind == "o"]
        transitions = [row for kind, row in batch if kind == "t"]
        try:
            connection = self._open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_INSERT_DECISION, decisions)
                connection.executemany(_INSERT_OUTCOME, outcomes)
                if transitions:
                    connection.executemany(_INSERT_TRANSITION, transitions)
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as error:  # OSError: the folder cannot be made
            with self._moving:
                self._failed(batch, error)
                self._in_flight = 0
            return False
        with self._moving:
            self._written += len(batch)
            self._in_flight = 0
        self._since_prune += len(batch)
        if self._failing is not None:
            logger.info(f"✅ [JOURNAL] Writes recovered; {self._dropped} row(s) dropped meanwhile")
            self._failing = None
        self._prune()
        return True

    def _decision_row(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        bar_time, recorded_at, decision, features, close, role = row
        sell, hold, buy = decision.probabilities
        versions = decision.versions
        if versions is not self._versions:  # one snapshot's mapping serves many decisions
            self._versions = versions
            self._versions_json = json.dumps(dict(versions), sort_keys=True)
        return (
            bar_time,
            recorded_at,
            self._slot,
            versions.get(self._slot, ""),
            self._versions_json,
            role,
            decision.action,
            decision.confidence,
            sell,
            hold,
            buy,
            close,
            np.ascontiguousarray(features, dtype="<f4").tobytes(),
        )

    def _failed(self, batch: list[tuple[str, tuple[Any, ...]]], error: Exception) -> None:
        self._errors += 1
        room = self._max_pending - len(self._pending)
        kept = batch[:room] if room > 0 else []
        self._dropped += len(batch) - len(kept)
        self._pending.extendleft(reversed(kept))
        reason = " ".join(str(error).split()) or type(error).__name__
        if self._failing != reason:
            logger.warning(
                f"⚠️ [JOURNAL] Cannot write {self.path.name}: {reason}; decisions go on, "
                f"{len(self._pending)} row(s) waiting, {self._dropped} dropped"
            )
            self._failing = reason
        if isinstance(error, sqlite3.DatabaseError) and self._connection is not None:
            # A fresh connection next time: a full disk or lost file may have broken this one.
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    def _prune(self, *, force: bool = False) -> None:
        now = time.monotonic()
        due = self._since_prune >= max(1, self._max_rows // 10) or (
            now - self._last_prune >= _PRUNE_SECONDS
        )
        if not (force or due) or self._connection is None:
            return
        self._last_prune, self._since_prune = now, 0
        try:
            for table in ("decisions", "outcomes"):
                self._connection.execute(
                    f"DELETE FROM {table} WHERE bar_time < "  # noqa: S608 - table names are ours
                    f"(SELECT MAX(bar_time) FROM {table}) - ?",
                    (self._retention_seconds,),
                )
                self._connection.execute(
                    f"DELETE FROM {table} WHERE id <= "  # noqa: S608 - table names are ours
                    f"(SELECT MAX(id) FROM {table}) - ?",
                    (self._max_rows,),
                )
        except sqlite3.Error as error:
            logger.warning(f"⚠️ [JOURNAL] Pruning {self.path.name} failed: {error}")

    # -- reading (blocking; own connection) ------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection, or None when there is no journal yet."""
        if not self.path.is_file():
            yield None
            return
        connection = sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self._busy_timeout
        )
        try:
            yield connection
        finally:
            connection.close()

    def last_bar_time(self, role: str = "champion") -> float | None:
        """The newest bar time decided on, or None with no journal (blocking)."""
        try:
            with self.reading() as connection:
                if connection is None:
                    return None
                [(latest,)] = connection.execute(
                    "SELECT MAX(bar_time) FROM decisions WHERE role = ?", (role,)
                ).fetchall()
        except sqlite3.Error as error:
            logger.warning(f"⚠️ [JOURNAL] Cannot read {self.path.name}: {error}")
            return None
        return None if latest is None else float(latest)

    def transitions(self, slot: str | None = None) -> list[Transition]:
        """Every stage change journaled (oldest first), or those of `slot` (blocking)."""
        query = (
            "SELECT bar_time, recorded_at, slot, from_stage, to_stage, candidate, incumbent, "
            "verdict, rule, reason, figures FROM transitions"
        )
        try:
            with self.reading() as connection:
                if connection is None:
                    return []
                if slot is None:
                    rows = connection.execute(query + " ORDER BY id").fetchall()
                else:
                    rows = connection.execute(
                        query + " WHERE slot = ? ORDER BY id", (slot,)
                    ).fetchall()
        except sqlite3.Error as error:
            logger.warning(f"⚠️ [JOURNAL] Cannot read transitions: {error}")
            return []
        return [Transition._make([*row[:-1], json.loads(row[-1])]) for row in rows]

    def recent_features(self, limit: int = 1000, width: int | None = None) -> np.ndarray | None:
        """The newest journaled feature rows (oldest first), or None when there are none."""
        try:
            with self.reading() as connection:
                if connection is None:
                    return None
                blobs = [
                    blob
                    for (blob,) in connection.execute(
                        "SELECT features FROM decisions WHERE role = 'champion' "
                        "ORDER BY id DESC LIMIT ?",
                        (limit,),
                    )
                ]
        except sqlite3.Error as error:
            logger.warning(f"⚠️ [JOURNAL] Cannot read recent features: {error}")
            return None
        if width is not None:
            blobs = [blob for blob in blobs if len(blob) == 4 * width]
        if not blobs:
            return None
        size = len(blobs[0])
        blobs = [blob for blob in blobs if len(blob) == size][::-1]
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), size // 4).copy()
