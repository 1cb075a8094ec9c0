"""Attacks on the model lifecycle: what a trader on real money, or an attacker, could do to it.

Each test runs the real standalone container (``tests/lifecycle_stack.py``) on a CSV of
autocorrelated bars, stepped one bar at a time: the momentum model earns, its inverse loses.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.brain.models import Candidate
from app.control import HostUnreachable, ask_host
from app.install.layout import ModelsLayout
from app.install.records import Origin
from app.lifecycle.controller import LifecycleRefused
from app.lifecycle.record import Stage
from tests.artifacts import sha256_hex
from tests.lifecycle_stack import (
    SLOT,
    LifecycleHost,
    champion_dir,
    lifecycle_settings,
    momentum_csv,
    momentum_file,
)
from tests.onnx_models import decision_model, momentum_model, save

CANARY_BARS = 60
Start = Callable[..., Awaitable[LifecycleHost]]


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return momentum_csv(tmp_path / "bars.csv")


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:  # replaces conftest's: the momentum model serves
    return champion_dir(tmp_path)


@pytest.fixture
async def start(models_dir: Path, csv_path: Path) -> AsyncIterator[Start]:
    """Starts hosts (a restart is a second start); `models_dir=` another directory."""
    started: list[LifecycleHost] = []

    async def starting(directory: Path | None = None, **sections: Any) -> LifecycleHost:
        settings = lifecycle_settings(directory or models_dir, csv_path, **sections)
        host = await LifecycleHost.start(settings)
        started.append(host)
        return host

    yield starting
    for host in started:
        await close(host)


async def close(host: LifecycleHost) -> None:
    await host.close()


async def install(host: LifecycleHost, model: Path) -> None:
    result = await host.models.swap_in([Candidate(SLOT, model)], origin=Origin(source="cli"))
    assert result.ok, result.reason


def active_sha(host: LifecycleHost) -> str:
    return sha256_hex((host.settings.models_dir / "unified_brain.onnx").read_bytes())


def crash_copy(host: LifecycleHost, into: Path) -> Path:
    """The models directory as a SIGKILL at this instant leaves it: what is on disk now,
    before any background task of the lifecycle has run (no await since the last bar)."""
    host.journal.flush()
    copied = into / "models"
    shutil.copytree(host.settings.models_dir, copied)
    return copied


# -- a restart in the window between a fail and its restore ---------------------------------


async def test_a_restart_right_after_a_fail_does_not_make_the_failed_candidate_champion(
    start: Start, tmp_path: Path
) -> None:
    """FAILS: the judge fails the inverted candidate and the record (durably) says
    ``champion momentum-1, last verdict fail on inverted-2``; the quarantine and the restore of
    the champion's file run afterwards in the background. A SIGKILL (or a power cut) before they
    finish leaves inverted-2 on disk, not yet quarantined. The next host takes "the serving
    model" as champion: inverted-2, the model just rolled back for losing money, trades again,
    judged by no one (the status even says champion inverted-2, verdict pending).

    Should: a record that names another champion and, as its last verdict, a fail of the model
    found on disk finishes the rollback at start (quarantine it, restore the champion) before
    anything trades on it.
    """
    host = await start()
    await host.advance(120)
    champion_sha = active_sha(host)
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    await install(host, inverted)
    await host.advance(1)
    assert host.lifecycle.stage is Stage.CANARY
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    assert host.lifecycle.report()["verdict"] == "fail"
    crashed = crash_copy(host, tmp_path / "crashed")  # before the restore ran
    assert sha256_hex((crashed / "unified_brain.onnx").read_bytes()) == sha256_hex(
        inverted.read_bytes()
    )

    second = await start(crashed)
    await second.advance(host.stepped + 5)

    assert second.trading_version() == "momentum-1"
    assert sha256_hex((crashed / "unified_brain.onnx").read_bytes()) == champion_sha
    assert second.models.quarantine.holds(sha256_hex(inverted.read_bytes())) is not None


# -- the champion's backup and retention -------------------------------------------------------


async def test_a_second_candidate_mid_canary_does_not_prune_the_champions_last_backup(
    start: Start, tmp_path: Path
) -> None:
    """FAILS (``models.backup_retention: 1``): momentum-2 is in canary when inverted-3 arrives
    and supersedes it. Installing inverted-3 backs up the file it replaces (momentum-2) and
    retention prunes every other backup: the champion momentum-1's last copy on disk is
    deleted. When the judge fails inverted-3, there is nothing to restore: the quarantined
    inverted-3 stays the active file (``status`` shows it, ``/readyz`` is happy) while
    momentum-1 decides from memory; a restart rolls back to momentum-2, which no judge ever
    passed, and makes it champion.

    Should: the lifecycle's champion is never pruned off the shelf while it is the champion
    (README: "The champion always has a backup"), so the rollback restores its file.
    """
    host = await start(models={"backup_retention": 1})
    await host.advance(120)
    champion_sha = active_sha(host)
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
    await host.advance(5)
    assert host.lifecycle.report()["candidate"] == "momentum-2"
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-3")
    await install(host, inverted)
    await host.advance(1)
    assert host.lifecycle.report()["candidate"] == "inverted-3"
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    await host.settle()
    assert host.lifecycle.report()["verdict"] == "fail"
    assert host.trading_version() == "momentum-1"

    assert active_sha(host) == champion_sha  # the champion's file is restored
    await close(host)
    second = await start(models={"backup_retention": 1})
    assert second.trading_version() == "momentum-1"


# -- controls racing the judge's rollback -----------------------------------------------------


async def test_reject_while_the_judges_rollback_is_in_flight_does_not_quarantine_the_champion(
    start: Start, tmp_path: Path
) -> None:
    """FAILS: the judge has just failed inverted-2 (``status`` is at most a second old, so the
    trader still sees it in canary, losing) and the trader runs ``python -m app reject``. With
    no candidate any more, reject "rolls the champion back to its newest other backup and
    quarantines the champion"; but the file on disk is still inverted-2 (its restore is in
    flight), so the "newest other backup" is momentum-1 itself: momentum-1, the champion, is
    quarantined while it goes on trading ("rejected momentum-1: momentum-1 is restored and the
    champion"). No sync or rollback will ever bring it back, a restart finds the active model
    quarantined. When the restore wins the race instead, the rollback answers "already
    serving" and reject dies on a KeyError (a 500 from /admin/reject), after quarantining the
    champion all the same.

    Should: reject waits for the rollback in flight (or refuses: "inverted-2 was rolled back
    already"), and never quarantines the model it restores.
    """
    host = await start()
    await host.advance(120)
    champion_sha = active_sha(host)
    await install(host, momentum_file(tmp_path / "offered", -1.0, "inverted-2"))
    await host.advance(1)
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)

    try:
        said = await host.lifecycle.reject()
    except LifecycleRefused as refused:
        said = str(refused)
    await host.settle()
    await host.advance(2)

    assert host.trading_version() == "momentum-1"
    quarantined = [entry.sha256 for entry in host.models.quarantine.entries()]
    assert champion_sha not in quarantined, said


async def test_a_model_installed_while_the_judges_rollback_is_in_flight_is_not_overwritten(
    start: Start, tmp_path: Path
) -> None:
    """FAILS: the judge fails inverted-2 and, before its background restore of momentum-1
    runs, a sync (or the inbox, or ``install``) installs momentum-3: the install says
    ``installed``, and the sync records the artifact as done. Then the restore runs and
    installs momentum-1's backup over momentum-3. momentum-3 never trades, is never judged,
    no transition or mail says so, and the sync will not offer the artifact again.

    Should: the restore puts the champion back only while the failed candidate is still the
    file on disk; a model installed meanwhile is the next candidate and gets its canary.
    """
    host = await start()
    await host.advance(120)
    await install(host, momentum_file(tmp_path / "offered", -1.0, "inverted-2"))
    await host.advance(1)
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    newer = momentum_file(tmp_path / "offered", 1.0, "momentum-3")

    await install(host, newer)  # before the restore task has run
    await host.settle()
    await host.advance(2)

    assert active_sha(host) == sha256_hex(newer.read_bytes())
    assert host.lifecycle.report()["candidate"] == "momentum-3"
    assert host.lifecycle.stage is Stage.CANARY


# -- hostile candidates: broken only on live rows -------------------------------------------

NO_JOURNAL = {"journal": {"enabled": False}}  # validation warms up on probe rows only


def raising_above(threshold: float, version: str) -> onnx.ModelProto:
    """The momentum model, but its run fails (a Gather out of bounds: onnxruntime raises)
    once a feature exceeds `threshold`: fine on validation's probe rows, broken on live ones."""
    model = momentum_model(1.0, version=version)
    graph = model.graph
    softmax = graph.node[-1]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(threshold, np.float32), "raise_threshold"),
            numpy_helper.from_array(np.array([0.0], np.float32), "raise_table"),
            numpy_helper.from_array(np.array(1000, np.int64), "raise_far"),
        ]
    )
    extra = [
        helper.make_node("ReduceMax", ["features"], ["raise_max"], keepdims=0),
        helper.make_node("Greater", ["raise_max", "raise_threshold"], ["raise_on"]),
        helper.make_node("Cast", ["raise_on"], ["raise_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["raise_int", "raise_far"], ["raise_index"]),
        helper.make_node("Gather", ["raise_table", "raise_index"], ["raise_value"]),
        helper.make_node("Add", [softmax.input[0], "raise_value"], ["logits_raised"]),
    ]
    softmax.input[0] = "logits_raised"
    nodes = [*graph.node[:-1], *extra, softmax]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


async def test_guard_a_candidate_nan_only_on_live_rows_fails_at_its_first_canary_bar(
    start: Start, tmp_path: Path
) -> None:
    """PASSING GUARD: a candidate whose output is NaN only on real feature rows passes
    validation (no journal: probe rows only), fails ``non_finite`` at the canary's first bar,
    the champion trades from the next bar, and the candidate is quarantined and its file
    restored."""
    host = await start(**NO_JOURNAL)
    await host.advance(120)
    champion_sha = active_sha(host)
    bad = save(decision_model(nan_above=10.0, version="nan-2"), tmp_path / "offered" / "nan.onnx")
    await install(host, bad)

    await host.advance(1)
    report = host.lifecycle.report()
    await host.advance(1)
    await host.settle()

    assert (report["stage"], report["verdict"], report["rule"]) == (
        "champion",
        "fail",
        "non_finite",
    )
    assert report["figures"]["bars"] == 1
    assert host.trading_version() == "momentum-1"
    assert host.models.quarantine.holds(sha256_hex(bad.read_bytes())) is not None
    assert active_sha(host) == champion_sha
    assert host.models.brain.unhealthy == {}


async def test_a_candidate_whose_decisions_raise_on_live_rows_fails_at_its_first_canary_bar(
    start: Start, tmp_path: Path
) -> None:
    """FAILS: a candidate whose every live decision raises (onnxruntime refuses the run) is
    judged as if it had decided a valid ``hold``: the trading loop takes no decision, so the
    position the champion left open stays open, unmanaged, and the judge waits for the loss
    limit (or 30 minutes of "stuck") to notice. Here the short position left by momentum-1 is
    carried for a dozen bars until the canary has lost 2%.

    Should: a decision that failed is not a distribution: ``non_finite`` at that bar, as a NaN
    output is, and the champion decides from the next bar.
    """
    host = await start(**NO_JOURNAL)
    await host.advance(120)
    await install(host, save(raising_above(10.0, "raises-2"), tmp_path / "offered" / "r.onnx"))

    await host.advance(1)
    report = host.lifecycle.report()
    await host.advance(1)

    assert (report["stage"], report["verdict"], report["rule"]) == (
        "champion",
        "fail",
        "non_finite",
    )
    assert host.trading_version() == "momentum-1"


async def test_a_candidate_in_shadow_whose_decisions_raise_does_not_stop_the_trading_loop(
    start: Start, tmp_path: Path
) -> None:
    """FAILS: with ``shadow_minutes`` > 0 (or a blackout) the candidate decides beside the
    champion, "off the hot path, trading nothing". When its run raises on a live row, the
    exception escapes ``after_decision`` and the trading loop's step: under the host,
    ``TradingLoop.run`` logs "The trading loop stopped after N bars" and the champion trades no
    more bars at all, for good, because of a model that was only on paper.

    Should: a shadow's failed decision is its invalid output (a hold, ``valid`` False): the
    candidate fails ``non_finite`` and the champion goes on trading.
    """
    host = await start(lifecycle={"shadow_minutes": 60}, **NO_JOURNAL)
    await host.advance(120)
    await install(host, save(raising_above(10.0, "raises-2"), tmp_path / "offered" / "r.onnx"))

    await host.advance(3)  # raises out of TradingLoop.step_async today
    await host.settle()

    assert host.trading_version() == "momentum-1"
    report = host.lifecycle.report()
    assert (report["stage"], report["verdict"], report["rule"]) == (
        "champion",
        "fail",
        "non_finite",
    )


# -- blackouts ------------------------------------------------------------------------------


async def test_a_model_arriving_in_a_blackout_gets_its_canary_with_on_inconclusive_rollback(
    start: Start, tmp_path: Path
) -> None:
    """FAILS (``on_inconclusive: rollback``, ``shadow_minutes: 0``): a model arriving inside a
    blackout waits in shadow, as README promises, "and its canary starts at the first bar after
    the range". But the wait is judged as a shadow window: at the blackout's end it has a
    handful of bars and no closed trade, so the verdict is ``inconclusive (min_trades)``, and
    with ``on_inconclusive: rollback`` the model is rolled back before it ever had a canary.
    Any model that lands shortly before a blackout's end is thrown away.

    Should: a shadow that is only a blackout's wait (no ``shadow_minutes``) goes on to the
    canary when the blackout ends (only a fail stops it); ``on_inconclusive`` applies to the
    end of a real window.
    """
    host = await start(lifecycle={"blackout": ["01:50-02:01"], "on_inconclusive": "rollback"})
    await host.advance(120)  # the next bar is 02:00, inside the blackout
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))

    await host.advance(1)
    waiting = host.lifecycle.report()["stage"]
    await host.advance(1)  # 02:01: the blackout is over
    await host.settle()

    assert waiting == "shadow"
    report = host.lifecycle.report()
    assert (report["stage"], report["candidate"]) == ("canary", "momentum-2"), report["reason"]
    assert host.trading_version() == "momentum-2"


async def test_an_unreadable_quarantine_mid_canary_then_a_restart_keeps_the_champion(
    start: Start, tmp_path: Path
) -> None:
    """FAILS: ``quarantine.json`` becomes unreadable in mid-canary (a bad edit, a full disk's
    torn copy). The judge fails inverted-2 and momentum-1 decides again from memory, but the
    quarantine fails closed: inverted-2 cannot be quarantined, and the restore of momentum-1's
    file is refused too ("every model counts as quarantined"). So far, so safe. Then the host
    restarts (a deploy, a reboot) with the file still unreadable: the lifecycle cannot ask the
    quarantine, takes the file on disk as the champion, and inverted-2, failed for losing money,
    trades again, judged by no one. ("Failing closed only keeps the bot trading the model it
    has": here it trades the model the judge rolled back.)

    Should: at start, a record whose champion is not the file on disk and whose last verdict
    failed that file loads the champion from the shelf and trades it (restoring the file when
    it can).
    """
    host = await start()
    await host.advance(120)
    await install(host, momentum_file(tmp_path / "offered", -1.0, "inverted-2"))
    await host.advance(5)
    assert host.lifecycle.stage is Stage.CANARY
    host.models.quarantine.path.write_text("{not json")
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    await host.settle()
    assert host.lifecycle.report()["verdict"] == "fail"
    assert host.trading_version() == "momentum-1"
    await close(host)

    second = await start()
    await second.advance(host.stepped + 2)

    assert second.trading_version() == "momentum-1"


# -- a restart that cannot resume ------------------------------------------------------------


async def test_a_canary_that_cannot_resume_is_a_journaled_stage_change_not_a_silent_promotion(
    start: Start, tmp_path: Path
) -> None:
    """FAILS: inverted-3 is in canary (it superseded momentum-2, and with
    ``backup_retention: 1`` no backup of the champion momentum-1 is left) when the host
    restarts. The canary cannot resume without its incumbent, so the lifecycle logs a warning
    and makes inverted-3 the champion: a candidate three bars into its canary now trades,
    judged by no one, and the journal's last transition still says ``champion -> canary``; no
    mail, no metric, and ``status`` shows ``champion inverted-3, verdict pending`` as if it had
    always been the champion.

    Should: a stage change like any other (journaled with its reason, alerted, counted), and,
    better, the candidate not promoted: keep it judged (or roll it back to the newest backup
    the shelf holds) rather than trust it.
    """
    host = await start(models={"backup_retention": 1})
    await host.advance(120)
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
    await host.advance(3)
    await install(host, momentum_file(tmp_path / "offered", -1.0, "inverted-3"))
    await host.advance(3)
    assert host.lifecycle.report()["stage"] == "canary"
    await close(host)

    second = await start(models={"backup_retention": 1})
    second.journal.flush()
    last = second.journal.transitions(SLOT)[-1]

    assert (last.from_stage, last.to_stage) == ("canary", "champion"), last
    assert last.candidate == "inverted-3"


async def test_a_restart_without_a_journal_does_not_judge_bars_from_before_the_canary(
    start: Start, tmp_path: Path
) -> None:
    """FAILS (``journal.enabled: false``, a CSV feed): momentum-2, byte for byte the champion's
    rule, is 30 bars into its canary when the host restarts. With no journal the trading loop
    has nothing to resume after, so the feed is traded again from its first bar; the resumed
    judge pairs every one of those old bars, with the candidate's return forced to 0 ("the
    stage's first bar": ``bar.time <= started_at``) against the champion's real paper return.
    After a few dozen of them the twin is "44% worse" on the win rate (evidence >= 60): rolled
    back and quarantined, a model exactly as good as the champion.

    Should: the judge sees only bars after the ones it already judged (the record's
    ``last_bar``), and never bars from before its window's start.
    """
    host = await start(**NO_JOURNAL)
    await host.advance(120)
    twin = momentum_file(tmp_path / "offered", 1.0, "momentum-2")
    await install(host, twin)
    await host.advance(30)
    await close(host)

    second = await start(**NO_JOURNAL)
    await second.until(lambda: second.lifecycle.stage is Stage.CHAMPION, limit=400)
    await second.settle()

    report = second.lifecycle.report()
    assert report["verdict"] != "fail", report["reason"]
    assert second.models.quarantine.holds(sha256_hex(twin.read_bytes())) is None


# -- the CLI's way to the host ----------------------------------------------------------------


@pytest.mark.parametrize("pid", ["abc", None, 2**40])
async def test_promote_with_an_ops_file_whose_pid_is_not_one_says_so_in_one_line(
    models_dir: Path, pid: object
) -> None:
    """FAILS: ``models/.sync/ops.json`` whose pid is not a process id (a hand edit, a file
    planted by another tool) makes ``python -m app promote`` / ``reject`` print "unexpected
    ValueError (or TypeError, OverflowError) ... (a bug)" instead of the one-line "no running
    host" that every other bad ops.json gets.

    Should: HostUnreachable ("... is not what a host writes").
    """
    layout = ModelsLayout(models_dir)
    layout.ops_file.parent.mkdir(parents=True, exist_ok=True)
    control = {"pid": pid, "url": "http://127.0.0.1:9", "token": "x"}
    layout.ops_file.write_text(json.dumps(control))

    with pytest.raises(HostUnreachable):
        await ask_host(layout, "promote", None)


# -- found by review: which models may come back without a canary ----------------------------


async def test_a_model_installed_before_a_restart_is_judged_not_adopted(
    start: Start, tmp_path: Path
) -> None:
    """A model installed into a running host before any bar came (a deploy overnight, a feed
    that ended), then a restart: the record's champion trades, and the new model is judged
    from the first bar, not adopted as champion."""
    host = await start()
    await host.advance(120)
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    await install(host, inverted)
    await close(host)

    second = await start()
    await second.advance(host.stepped)  # bars already journaled only warm the features up
    await second.advance(2)

    assert second.lifecycle.stage is Stage.CANARY
    assert second.lifecycle.report()["candidate"] == "inverted-2"
    assert second.lifecycle.champion.version == "momentum-1"


async def test_rejecting_the_champion_restores_the_champion_before_it_not_any_backup(
    start: Start, tmp_path: Path
) -> None:
    """inverted-2 is superseded in its canary by momentum-3, which is promoted; rejecting
    momentum-3 must bring back momentum-1 (the champion before it), not inverted-2, the newest
    other backup on the shelf, which never passed a canary."""
    host = await start()
    await host.advance(120)
    await install(host, momentum_file(tmp_path / "offered", -1.0, "inverted-2"))
    await host.advance(1)
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-3"))
    await host.advance(1)
    host.lifecycle.promote()
    await host.advance(1)

    said = await host.lifecycle.reject()
    await host.settle()
    await host.advance(2)
    host.journal.flush()

    assert said == "rejected momentum-3: momentum-1 is restored and the champion"
    assert host.trading_version() == "momentum-1"
    superseded = [t for t in host.journal.transitions(SLOT) if t.rule == "superseded"]
    assert [t.candidate for t in superseded] == ["inverted-2"]


async def test_a_late_reject_after_an_inconclusive_rollback_takes_out_nothing(
    start: Start, tmp_path: Path
) -> None:
    """With on_inconclusive: rollback, the canary ends inconclusive and is rolled back; a
    reject a second later (the trader reading a status a second old) is refused."""
    host = await start(lifecycle={"on_inconclusive": "rollback", "min_trades": 100000})
    await host.advance(120)
    champion_sha = active_sha(host)
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
    await host.advance(1)
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS + 2)

    with pytest.raises(LifecycleRefused, match="nothing to reject: momentum-2 was already"):
        await host.lifecycle.reject()
    await host.settle()

    assert host.trading_version() == "momentum-1"
    assert active_sha(host) == champion_sha
    assert host.models.quarantine.entries() == []


async def test_a_rejected_champion_is_quarantined_with_the_artifact_it_came_in(
    start: Start, tmp_path: Path
) -> None:
    host = await start()
    await host.advance(120)
    model = momentum_file(tmp_path / "offered", 1.0, "momentum-2")
    origin = Origin(source="github", artifact_id=42, run_id=7, artifact_name="models")
    assert (await host.models.swap_in([Candidate(SLOT, model)], origin=origin)).ok
    await host.advance(1)
    host.lifecycle.promote()
    await host.advance(1)

    await host.lifecycle.reject()

    [entry] = host.models.quarantine.entries()
    assert entry.origin is not None
    assert (entry.origin.artifact_id, entry.origin.run_id) == (42, 7)


async def test_a_manual_rollback_in_mid_canary_ends_the_canary_with_its_own_verdict(
    start: Start, tmp_path: Path
) -> None:
    host = await start()
    await host.advance(120)
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
    await host.advance(1)
    host.lifecycle.promote()
    await host.advance(1)
    await install(host, momentum_file(tmp_path / "offered", -1.0, "inverted-3"))
    await host.advance(1)
    assert host.lifecycle.stage is Stage.CANARY

    assert (await host.models.rollback()).ok  # python -m app rollback, by hand
    await host.advance(1)

    report = host.lifecycle.report()
    assert (report["stage"], report["candidate"], report["verdict"], report["rule"]) == (
        "champion",
        "inverted-3",
        "inconclusive",
        "abandoned",
    )
    assert host.trading_version() == "momentum-2"


async def test_a_judge_state_that_does_not_parse_does_not_stop_the_host(
    start: Start, tmp_path: Path
) -> None:
    host = await start()
    await host.advance(120)
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
    await host.advance(3)
    await close(host)
    path = host.models.layout.lifecycle_file
    record = json.loads(path.read_text())
    record["judge"]["version"] = 99  # a future release's state, or a hand edit
    path.write_text(json.dumps(record))

    second = await start()
    second.journal.flush()

    last = second.journal.transitions(SLOT)[-1]
    assert (last.from_stage, last.to_stage, last.rule) == ("canary", "champion", "not_resumed")


async def test_the_bar_spacing_of_a_restarted_host_is_the_feeds_not_the_settings(
    tmp_path: Path,
) -> None:
    """On 1-second bars, a model arriving at the first bar after a restart is judged with
    the window and the stuck guardrail in 1-second bars (3600 and 3600), not minute bars."""
    bars = momentum_csv(tmp_path / "seconds.csv", bar_seconds=1)
    settings = lifecycle_settings(champion_dir(tmp_path), bars)
    first = await LifecycleHost.start(settings)
    await first.advance(100)
    await first.close()
    second = await LifecycleHost.start(settings)
    try:
        await install(second, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
        await second.advance(first.stepped + 1)
        judging = second.lifecycle._judging
        assert judging is not None
        assert (judging.judge.rules.horizon_bars, judging.judge.rules.stuck_bars) == (3600, 3600)
    finally:
        await second.close()


async def test_status_in_a_blackout_shadow_says_when_the_canary_can_start(
    start: Start, tmp_path: Path
) -> None:
    host = await start(lifecycle={"blackout": ["01:50-03:00"]})
    await host.advance(120)  # 00:00 .. 01:59
    await install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
    await host.advance(1)

    report = host.lifecycle.report()
    assert report["stage"] == "shadow"
    assert report["ends_at"] == "2026-03-02T03:00:00+00:00"
    assert report["time_left_seconds"] == 3600.0
