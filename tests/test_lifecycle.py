"""The model lifecycle end to end, on bars whose returns are autocorrelated: the momentum model
earns, its inverse loses, and every route a model can arrive by goes through the same canary.

The host is the standalone container (``tests/lifecycle_stack.py``); alerts go to a real SMTP
server, sync to the fake GitHub, and ``install`` runs as a separate process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from app.brain.models import Candidate
from app.containers import Application
from app.install.installer import ModelInstaller
from app.install.records import Origin
from app.lifecycle.controller import LifecycleRefused
from app.lifecycle.record import Stage
from app.services.inbox import LocalInbox
from app.services.outcome import CycleOutcome
from app.services.sync import CloudModelSynchronizationService
from app.services.webhook import WebhookDispatcher
from app.trading.journal import Transition
from app.trading.market import bar_feed
from tests.artifacts import model_artifact, sha256_hex
from tests.fakes.github import FakeGitHub, delivery_headers, webhook_signature, workflow_run_payload
from tests.lifecycle_stack import (
    SLOT,
    LifecycleHost,
    champion_dir,
    lifecycle_settings,
    momentum_csv,
    momentum_file,
)
from tests.metrics import parse_metrics, value
from tests.smtp_server import Inbox, alert_settings

CANARY_BARS = 60  # lifecycle_settings' canary_minutes on minute bars
SECRET = "webhook-secret-for-lifecycle-tests"
Route = Callable[["LifecycleHost", Path, str], Awaitable[None]]


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return momentum_csv(tmp_path / "bars.csv")


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:  # replaces conftest's: the momentum model serves
    return champion_dir(tmp_path)


def github_sections(fake: FakeGitHub) -> dict[str, Any]:
    github = {"api_url": fake.api_url, "token": fake.token, "owner": fake.owner}
    github |= {"repository": fake.repository}
    return {
        "github": github,
        "cloud_sync": {"min_interval_minutes": 0, "sync_on_startup": False},
        "resilience": {"max_retries": 1, "base_delay_seconds": 0.01},
        "ops": {"port": 0, "webhook_secret": SECRET},
    }


@pytest.fixture
async def start(
    models_dir: Path, csv_path: Path, fake: FakeGitHub, smtp: Any
) -> AsyncIterator[Callable[..., Awaitable[LifecycleHost]]]:
    """Starts hosts over the same models directory (a restart is a second start)."""
    started: list[LifecycleHost] = []

    async def starting(**sections: Any) -> LifecycleHost:
        merged = github_sections(fake)
        for name, values in sections.items():
            merged[name] = {**merged.get(name, {}), **values}
        alerts = alert_settings(smtp.port).model_dump(mode="json")
        settings = lifecycle_settings(models_dir, csv_path, alerts=alerts, **merged)
        host = await LifecycleHost.start(settings)
        started.append(host)
        return host

    yield starting
    for host in started:
        await host.close()


def model_bytes(folder: Path, sign: float, version: str) -> bytes:
    return momentum_file(folder, sign, version).read_bytes()


# -- the routes a model arrives by ----------------------------------------------------------


async def by_install(host: LifecycleHost, model: Path, _version: str) -> None:
    """``python -m app install`` in another process; the host's watch picks the file up."""
    folder = model.parent
    settings_file = folder / "install-settings.yaml"
    document = {"models": {"dir": str(host.settings.models_dir), "lock_wait_seconds": 5}}
    settings_file.write_text(yaml.safe_dump(document))
    env = {k: v for k, v in os.environ.items() if "__" not in k and k != "APP_SETTINGS"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "--settings", str(settings_file), "install", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert await host.models.refresh_from_disk() == [SLOT]


async def by_disk(host: LifecycleHost, model: Path, _version: str) -> None:
    """A file copied over the active one by hand (renamed into place); the watch sees it."""
    active = host.settings.models_dir / "unified_brain.onnx"
    staged = active.with_name(".copy.onnx")
    shutil.copyfile(model, staged)
    staged.replace(active)
    assert await host.models.refresh_from_disk() == [SLOT]


async def by_inbox(host: LifecycleHost, model: Path, version: str) -> None:
    zipped = host.settings.models_dir / "inbox" / f"{version}.zip"
    zipped.parent.mkdir(exist_ok=True)
    zipped.write_bytes(model_artifact(version, model=model.read_bytes()))
    os.utime(zipped, (1, 1))  # settled
    inbox: LocalInbox = host.container.core.inbox()
    [result] = await inbox.process_pending()
    assert result.outcome == "installed", result.reason


async def by_sync(host: LifecycleHost, model: Path, version: str) -> None:
    fake: FakeGitHub = host.fake
    run = fake.add_run()
    fake.add_artifact(run, f"model-{version}", model_artifact(version, model=model.read_bytes()))
    sync: CloudModelSynchronizationService = await host.resolve(host.container.core.sync)
    report = await sync.synchronize_models(force=True)
    assert report.outcome == "installed", report.reason


async def by_webhook(host: LifecycleHost, model: Path, version: str) -> None:
    """A signed ``workflow_run`` delivery POSTed to the host's ops server."""
    fake: FakeGitHub = host.fake
    run = fake.add_run()
    fake.add_artifact(run, f"model-{version}", model_artifact(version, model=model.read_bytes()))
    body = json.dumps(workflow_run_payload(fake, run)).encode()
    headers = delivery_headers(signature=webhook_signature(body, SECRET))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{host.url}/webhooks/github", data=body, headers=headers) as response,
    ):
        assert response.status == 202, await response.text()
    webhooks: WebhookDispatcher = await host.resolve(host.container.core.webhooks)
    await webhooks.drain()  # the host's webhook job, run to the end of its queue


ROUTES: dict[str, Route] = {
    "install": by_install,
    "disk": by_disk,
    "inbox": by_inbox,
    "sync": by_sync,
    "webhook": by_webhook,
}


def transitions(host: LifecycleHost) -> list[Transition]:
    host.journal.flush()
    return host.journal.transitions(SLOT)


def mails(smtp_inbox: Inbox) -> list[str]:
    return [str(delivery.message["Subject"]) for delivery in smtp_inbox.deliveries]


async def mail_arrives(smtp_inbox: Inbox, subject: str) -> str:
    for _ in range(100):
        for delivery in smtp_inbox.deliveries:
            if str(delivery.message["Subject"]) == subject:
                return str(delivery.message.get_content())
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail {subject!r}; got {mails(smtp_inbox)}")


# -- a bad candidate -------------------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
async def test_an_inverted_candidate_is_rolled_back_within_the_canary_and_quarantined(
    route: str,
    start: Callable[..., Awaitable[LifecycleHost]],
    fake: FakeGitHub,
    inbox: Inbox,
    tmp_path: Path,
) -> None:
    host = await start()
    host.fake = fake
    await host.advance(120)
    champion_sha = host.models.brain.snapshot.models[SLOT].sha256
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")

    await ROUTES[route](host, inverted, "inverted-2")
    assert host.trading_version() == "momentum-1"  # nothing trades before the next bar
    await host.advance(1)
    assert host.lifecycle.stage is Stage.CANARY
    assert host.trading_version() == "inverted-2"
    taken = await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    await host.settle()

    assert taken < CANARY_BARS
    assert host.trading_version() == "momentum-1"  # from the very next bar
    assert sha256_hex((host.settings.models_dir / "unified_brain.onnx").read_bytes()) == (
        champion_sha
    )
    banned = host.models.quarantine.holds(sha256_hex(inverted.read_bytes()))
    assert banned is not None
    assert banned.version == "inverted-2"
    report = host.lifecycle.report()
    assert (report["stage"], report["verdict"], report["candidate"]) == (
        "champion",
        "fail",
        "inverted-2",
    )
    assert report["figures"]["candidate_net_return"] < report["figures"]["incumbent_net_return"]
    stages = [(t.from_stage, t.to_stage, t.verdict) for t in transitions(host)]
    assert stages[-2:] == [("champion", "canary", "pending"), ("canary", "champion", "fail")]
    body = await mail_arrives(inbox, "Model rolled back - unified_brain version inverted-2")
    assert report["reason"] in body
    assert "Now trading: momentum-1" in body
    assert "net return: candidate -" in body


async def test_a_quarantined_model_offered_again_is_refused_by_the_inbox_and_by_sync(
    start: Callable[..., Awaitable[LifecycleHost]], fake: FakeGitHub, tmp_path: Path
) -> None:
    host = await start()
    host.fake = fake
    await host.advance(120)
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    await by_sync(host, inverted, "inverted-2")
    await host.until(lambda: host.lifecycle.stage is Stage.CANARY, limit=2)
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    await host.settle()

    zipped = host.settings.models_dir / "inbox" / "again.zip"
    zipped.parent.mkdir(exist_ok=True)
    zipped.write_bytes(model_artifact("inverted-again", model=inverted.read_bytes()))
    os.utime(zipped, (1, 1))
    inbox: LocalInbox = host.container.core.inbox()
    [result] = await inbox.process_pending()
    run = fake.add_run()
    fake.add_artifact(run, "model-again", model_artifact("inverted-3", model=inverted.read_bytes()))
    sync: CloudModelSynchronizationService = await host.resolve(host.container.core.sync)
    report = await sync.synchronize_models(force=True)

    assert result.outcome == "rejected"
    reason_file = zipped.parent / "rejected" / "again.zip.reason.txt"
    assert "quarantined" in reason_file.read_text()
    assert report.outcome is CycleOutcome.REJECTED
    assert "quarantined" in report.reason
    await host.advance(3)
    assert host.trading_version() == "momentum-1"


# -- a good candidate ------------------------------------------------------------------------


async def test_a_candidate_that_decides_as_the_champion_is_promoted_when_the_window_ends(
    start: Callable[..., Awaitable[LifecycleHost]], inbox: Inbox, tmp_path: Path
) -> None:
    host = await start()
    await host.advance(120)
    twin = momentum_file(tmp_path / "offered", 1.0, "momentum-2")

    await host.models.swap_in([Candidate(SLOT, twin)], origin=Origin(source="cli"))
    await host.advance(1)
    started = host.lifecycle.report()
    taken = await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS + 1)

    assert started["stage"] == "canary"
    assert taken == CANARY_BARS  # not a bar before the window ends
    report = host.lifecycle.report()
    assert (report["verdict"], report["rule"]) == ("pass", "window")
    assert host.trading_version() == "momentum-2"
    assert host.lifecycle.champion.version == "momentum-2"
    assert host.models.quarantine.entries() == []
    await mail_arrives(inbox, "Model promoted - unified_brain version momentum-2")
    await host.advance(5)
    assert host.trading_version() == "momentum-2"  # no second canary for the same model


async def test_a_restart_in_mid_canary_resumes_it_where_it_was(
    start: Callable[..., Awaitable[LifecycleHost]], tmp_path: Path
) -> None:
    first = await start()
    await first.advance(120)
    twin = momentum_file(tmp_path / "offered", 1.0, "momentum-2")
    await first.models.swap_in([Candidate(SLOT, twin)], origin=Origin(source="cli"))
    await first.advance(11)  # the canary's first bar and ten more
    before = first.lifecycle.report()
    await first.close()

    second = await start()
    resumed = second.lifecycle.report()
    await second.advance(first.stepped)  # bars already journaled only warm the features up
    taken = await second.until(lambda: second.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)

    assert before["stage"] == resumed["stage"] == "canary"
    assert (resumed["candidate"], resumed["incumbent"]) == ("momentum-2", "momentum-1")
    assert (resumed["started_at"], resumed["ends_at"]) == (before["started_at"], before["ends_at"])
    assert resumed["figures"]["bars"] == before["figures"]["bars"]
    assert second.trading_version() == "momentum-2"
    # The canary's first bar was bar 121, the first host stepped to bar 131, and the window's
    # last bar is 60 minutes after the first: 181.
    assert taken == CANARY_BARS - 10
    assert second.lifecycle.report()["verdict"] == "pass"


async def test_a_quarantined_model_found_active_at_start_is_rolled_back_before_it_trades(
    start: Callable[..., Awaitable[LifecycleHost]], tmp_path: Path
) -> None:
    first = await start()
    await first.advance(120)
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    await by_sync_free_install(first, inverted)
    await first.until(lambda: first.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    await first.close()
    # While no host runs, someone copies the quarantined model over the active file, and the
    # record is gone (a fresh models directory restored from elsewhere): only the quarantine
    # knows the model.
    active = first.settings.models_dir / "unified_brain.onnx"
    shutil.copyfile(inverted, active)
    first.models.layout.lifecycle_file.unlink()

    second = await start()

    assert second.trading_version() == "momentum-1"
    assert sha256_hex(active.read_bytes()) != sha256_hex(inverted.read_bytes())
    assert second.lifecycle.stage is Stage.CHAMPION


async def test_rejecting_the_champion_restores_the_one_before_and_quarantines_it(
    start: Callable[..., Awaitable[LifecycleHost]], inbox: Inbox, tmp_path: Path
) -> None:
    host = await start()
    await host.advance(120)
    twin = momentum_file(tmp_path / "offered", 1.0, "momentum-2")
    await by_sync_free_install(host, twin)
    await host.advance(1)
    assert host.lifecycle.promote() == "promoted momentum-2: it is the champion of unified_brain"
    await host.advance(2)

    said = await host.lifecycle.reject()
    await host.advance(2)

    assert said == "rejected momentum-2: momentum-1 is restored and the champion"
    assert host.trading_version() == "momentum-1"
    assert host.lifecycle.champion.version == "momentum-1"
    assert host.models.quarantine.holds(sha256_hex(twin.read_bytes())) is not None
    last = transitions(host)[-1]
    assert (last.from_stage, last.to_stage, last.verdict, last.rule) == (
        "champion",
        "champion",
        "fail",
        "by_hand",
    )
    await mail_arrives(inbox, "Model rolled back - unified_brain version momentum-2")
    with pytest.raises(LifecycleRefused, match="nothing to promote"):
        host.lifecycle.promote()


async def by_sync_free_install(host: LifecycleHost, model: Path) -> None:
    """An install in this process (no route under test): the candidate for a canary."""
    result = await host.models.swap_in([Candidate(SLOT, model)], origin=Origin(source="cli"))
    assert result.ok, result.reason


# -- swap windows, shadow, direct ----------------------------------------------------------


async def test_a_blackout_keeps_a_new_model_in_shadow_until_the_window_is_over(
    start: Callable[..., Awaitable[LifecycleHost]], tmp_path: Path
) -> None:
    # Bars start at 00:00 UTC; the model arrives before the bar of 02:00, inside 01:50-02:30.
    host = await start(lifecycle={"blackout": ["01:50-02:30"]})
    await host.advance(120)
    twin = momentum_file(tmp_path / "offered", 1.0, "momentum-2")
    await host.models.swap_in([Candidate(SLOT, twin)], origin=Origin(source="cli"))

    await host.advance(1)
    in_shadow = host.lifecycle.report()
    taken = await host.until(lambda: host.lifecycle.stage is Stage.CANARY, limit=60)

    assert in_shadow["stage"] == "shadow"
    assert host.trading_version() == "momentum-2"
    assert taken == 30  # bars 02:01 .. 02:30: in shadow to 02:29, the canary starts at 02:30
    canary = host.lifecycle.report()
    assert canary["started_at"] == "2026-03-02T02:30:00+00:00"
    assert [t.to_stage for t in transitions(host)][-2:] == ["shadow", "canary"]


async def test_in_shadow_a_bad_candidate_never_trades_and_is_quarantined(
    start: Callable[..., Awaitable[LifecycleHost]], tmp_path: Path
) -> None:
    host = await start(lifecycle={"shadow_minutes": 60})
    await host.advance(120)
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    await host.models.swap_in([Candidate(SLOT, inverted)], origin=Origin(source="cli"))

    traded: set[str] = set()

    def judged() -> bool:
        traded.add(host.trading_version())
        return host.lifecycle.stage is Stage.CHAMPION and host.stepped > 121

    await host.until(judged, limit=70)
    await host.settle()

    assert traded == {"momentum-1"}
    assert host.lifecycle.report()["verdict"] == "fail"
    assert host.models.quarantine.holds(sha256_hex(inverted.read_bytes())) is not None
    assert host.models.brain.snapshot.models[SLOT].version == "momentum-1"  # files restored
    journal_rows = host.journal
    journal_rows.flush()
    with journal_rows.reading() as connection:
        assert connection is not None
        [(shadow_rows,)] = connection.execute(
            "SELECT COUNT(*) FROM decisions WHERE role = 'shadow' AND version = 'inverted-2'"
        ).fetchall()
    assert shadow_rows > 0


async def test_direct_mode_keeps_the_seeds_swap_with_no_judging(
    models_dir: Path, csv_path: Path, tmp_path: Path
) -> None:
    settings = lifecycle_settings(models_dir, csv_path, lifecycle={"mode": "direct"})
    container = Application(config=settings)
    models: ModelInstaller = container.models()
    await models.start()
    loop = container.trading()
    bars = iter(bar_feed("csv", csv_path=csv_path, seed=0, bar_seconds=60).bars)
    try:
        for _ in range(120):
            await loop.step_async(next(bars))
        inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
        await models.swap_in([Candidate(SLOT, inverted)], origin=Origin(source="cli"))
        versions = set()
        for _ in range(CANARY_BARS + 10):
            decision = await loop.step_async(next(bars))
            assert decision is not None
            versions.add(decision.versions[SLOT])
    finally:
        container.journal().close()

    assert container.lifecycle() is None
    assert versions == {"inverted-2"}  # trades from the next decision on, and stays
    assert not models.layout.lifecycle_file.exists()
    assert models.quarantine.entries() == []


# -- metrics ---------------------------------------------------------------------------------


async def test_metrics_count_stage_changes_and_verdicts_and_show_the_paired_figures(
    start: Callable[..., Awaitable[LifecycleHost]], tmp_path: Path
) -> None:
    host = await start()
    await host.advance(120)
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    await host.models.swap_in([Candidate(SLOT, inverted)], origin=Origin(source="cli"))
    await host.advance(6)
    live = parse_metrics(host.container.monitoring().render()[0].decode())
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    await host.advance(2)  # the champion trades again
    final = parse_metrics(host.container.monitoring().render()[0].decode())

    changes = "trading_brain_lifecycle_stage_changes_total"
    assert value(live, changes, slot=SLOT, stage="canary") == 1
    paired = value(live, "trading_brain_lifecycle_paired", slot=SLOT, figure="bars")
    assert paired is not None
    assert paired >= 5
    assert value(final, changes, slot=SLOT, stage="champion") == 1
    verdicts = [
        labels
        for (name, labels), count in final.items()
        if name == "trading_brain_lifecycle_verdicts_total" and count == 1
    ]
    assert [dict(labels)["verdict"] for labels in verdicts] == ["fail"]
    position = "trading_paper_position"
    assert value(live, position, slot=SLOT, version="inverted-2") is not None
    assert value(final, position, slot=SLOT, version="inverted-2") is None  # holds nothing now
    assert value(final, position, slot=SLOT, version="momentum-1") is not None


# -- controls over HTTP --------------------------------------------------------------------


async def test_admin_promote_and_reject_take_the_control_token_and_say_why_not(
    start: Callable[..., Awaitable[LifecycleHost]], tmp_path: Path
) -> None:
    host = await start(ops={"admin_token": "admin-secret"})
    control = json.loads((host.settings.models_dir / ".sync" / "ops.json").read_text())
    assert oct((host.settings.models_dir / ".sync" / "ops.json").stat().st_mode & 0o777) == "0o600"

    async def post(path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{host.url}{path}", json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    await host.advance(120)
    nothing = await post("/admin/promote", control["token"])
    wrong = await post("/admin/promote", "not-the-token")
    missing = await post("/admin/reject", None)
    bad_body = await post("/admin/promote", "admin-secret", {"slot": 3})
    unknown_slot = await post("/admin/promote", "admin-secret", {"slot": "other"})
    twin = momentum_file(tmp_path / "offered", 1.0, "momentum-2")
    await by_sync_free_install(host, twin)
    await host.advance(1)
    rejected = await post("/admin/reject", "admin-secret", {"slot": SLOT})
    await host.settle()
    await host.advance(1)

    assert nothing[0] == 409
    assert "nothing to promote" in nothing[1]["reason"]
    assert wrong[0] == missing[0] == 401
    assert bad_body[0] == unknown_slot[0] == 400
    assert rejected == (
        200,
        {
            "ok": True,
            "reason": "rejected momentum-2: momentum-1 decides again; its files are being restored",
        },
    )
    assert host.trading_version() == "momentum-1"
    assert host.models.brain.snapshot.models[SLOT].version == "momentum-1"


async def test_the_shelf_keeps_no_quarantined_model_and_no_second_copy(
    start: Callable[..., Awaitable[LifecycleHost]], tmp_path: Path
) -> None:
    """A backup of the quarantined candidate (made when the champion is restored over it), or
    a second copy of a model already on the shelf, would only push a useful backup out of
    retention."""
    host = await start()
    await host.advance(120)
    inverted = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    await by_sync_free_install(host, inverted)  # backs up momentum-1
    await host.advance(1)
    await host.until(lambda: host.lifecycle.stage is Stage.CHAMPION, limit=CANARY_BARS)
    await host.settle()  # momentum-1 restored over inverted-2: no backup of inverted-2
    await by_sync_free_install(host, momentum_file(tmp_path / "offered", 1.0, "momentum-2"))
    await host.advance(1)  # momentum-1 replaced again: already on the shelf
    host.lifecycle.promote()
    await host.settle()  # the new champion, momentum-2, is shelved

    shelf = [sha256_hex(path.read_bytes()) for path in host.models.backups()]

    assert sha256_hex(inverted.read_bytes()) not in shelf
    assert len(shelf) == len(set(shelf)) == 2
