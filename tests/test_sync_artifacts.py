"""What an artifact may hold: checked models, hostile zips, several slots, inert pickles.

``tests/sync_host.py`` builds the service graph.
"""

from __future__ import annotations

import os
import pickle
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.artifacts import (
    hostile_artifact,
    model_artifact,
    model_bytes,
    model_members,
    tripwire_pickle,
    zip_bytes,
)
from tests.fakes.github import FakeGitHub
from tests.onnx_models import decision_model, save
from tests.sync_host import EMBEDDED_VERSION, SLOT, fake_settings, tree
from tests.zips import entry, patch_header, write_zip

MIB = 1 << 20


# -- the models inside are checked before anything is installed ----------------------------------


async def test_a_metadata_checksum_mismatch_is_rejected(fake, host):
    run = fake.add_run()
    content = model_artifact("lying", declared_sha256="1" * 64)
    artifact = fake.add_artifact(run, "trained-model", content)
    before = tree(host.models_dir)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert "metadata.json declares SHA-256" in report.reason
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert tree(host.models_dir) == before


async def test_a_model_the_brain_refuses_is_rejected_and_not_downloaded_again(fake, host):
    run = fake.add_run()
    narrow = model_bytes("narrow", n_features=8)  # the brain decides from 16 features
    artifact = fake.add_artifact(run, "trained-model", model_artifact("narrow", model=narrow))
    before = tree(host.models_dir)

    report = await host.sync.synchronize_models(force=True)
    again = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert again.outcome == "up_to_date", again
    assert fake.blob.downloads == 1
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert tree(host.models_dir) == before


# -- hostile zips through the whole pipeline -----------------------------------------------------


def _absolute(tmp_path: Path) -> list[Any]:
    return [(str(tmp_path / "escaped.onnx"), model_bytes("evil"))]


def _dot_dot(tmp_path: Path) -> list[Any]:
    # From models/.sync/work/<id>/ four levels up is tmp_path.
    return [("../../../../escaped.onnx", model_bytes("evil"))]


def _symlink(tmp_path: Path) -> list[Any]:
    link = entry("unified_brain.onnx", mode=stat.S_IFLNK | 0o777)
    return [(link, str(tmp_path / "escaped.onnx").encode())]


def _duplicate(tmp_path: Path) -> list[Any]:
    return [("unified_brain.onnx", model_bytes("one")), ("unified_brain.onnx", model_bytes("two"))]


def _oversized(tmp_path: Path) -> list[Any]:
    noise = os.urandom(3 * MIB)  # incompressible: the ratio stays near 1, the total is over
    return [*model_members("v2"), ("noise.pkl", noise)]


def _high_ratio(tmp_path: Path) -> list[Any]:
    # Inflates 1000:1; it is refused on the ratio before it could reach the total limit.
    return [*model_members("v2"), ("bomb.pkl", bytes(3 * MIB // 2))]


def _lying_header(tmp_path: Path) -> bytes:
    path = write_zip(tmp_path / "lying.zip", [*model_members("v2"), ("bomb.pkl", bytes(MIB))])
    patch_header(path, "bomb.pkl", file_size=1000)  # claims 1000 bytes, inflates to 1 MiB
    data = path.read_bytes()
    path.unlink()
    return data


HOSTILE: dict[str, tuple[Callable[[Path], Any], str]] = {
    "absolute path": (_absolute, "absolute path"),
    "dot-dot": (_dot_dot, "'..' in its path"),
    "symlink": (_symlink, "it is a symlink"),
    "duplicate names": (_duplicate, "collides"),
    "oversized": (_oversized, "inflates to more than the limit"),
    "high-ratio bomb": (_high_ratio, "compression ratio"),
    "lying header": (_lying_header, "past its declared size"),
}


@pytest.mark.parametrize(("build", "rule"), HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_zips_are_rejected_and_write_nothing_outside_staging(
    fake, models_dir, start_host, tmp_path, build, rule
):
    host = await start_host(fake_settings(fake, models_dir, models={"max_uncompressed_mb": 2}))
    built = build(tmp_path)
    content = built if isinstance(built, bytes) else hostile_artifact(tmp_path, built)
    run = fake.add_run()
    artifact = fake.add_artifact(run, "trained-model", content)
    outside = tree(tmp_path, skip="models")
    inside = tree(models_dir)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert rule in report.reason
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert tree(tmp_path, skip="models") == outside
    assert not (tmp_path / "escaped.onnx").exists()
    assert tree(models_dir) == inside
    sync_dir = models_dir / ".sync"
    assert [p for p in (sync_dir / "work").rglob("*") if p.is_file()] == []
    assert list((sync_dir / "downloads").iterdir()) == []


# -- what an artifact may hold -------------------------------------------------------------------


@pytest.fixture
def two_slot_models(models_dir: Path) -> Path:
    save(decision_model(seed=5, version="risk-0"), models_dir / "risk" / "risk_model.onnx")
    return models_dir


def two_slot_settings(fake: FakeGitHub, models_dir: Path) -> Settings:
    slots = {SLOT: {"path": "unified_brain.onnx"}, "risk": {"path": "risk/risk_model.onnx"}}
    return fake_settings(fake, models_dir, brain={"slots": slots})


def two_slot_artifact(*, risk_model: bytes) -> bytes:
    return zip_bytes(
        [
            *model_members("brain-2", folder="brain", slot=SLOT),
            *model_members(
                "risk-2", folder="risk", name="risk_model.onnx", slot="risk", model=risk_model
            ),
        ]
    )


async def test_a_multi_slot_artifact_installs_every_slot(fake, two_slot_models, start_host):
    host = await start_host(two_slot_settings(fake, two_slot_models))
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", two_slot_artifact(risk_model=model_bytes("risk-2")))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.serving() == {SLOT: "brain-2", "risk": "risk-2"}
    assert host.provenance("risk")["run_id"] == run.id
    assert (two_slot_models / "risk" / "risk_model.onnx").read_bytes() == model_bytes("risk-2")


async def test_a_multi_slot_artifact_with_one_bad_model_installs_neither(
    fake, two_slot_models, start_host
):
    host = await start_host(two_slot_settings(fake, two_slot_models))
    run = fake.add_run()
    broken = model_bytes("risk-2", nan_output=True)  # loads, but its output is not finite
    artifact = fake.add_artifact(run, "trained-model", two_slot_artifact(risk_model=broken))
    before = tree(two_slot_models)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert host.serving() == {SLOT: EMBEDDED_VERSION, "risk": "risk-0"}
    assert tree(two_slot_models) == before
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"


async def test_a_pickle_is_stored_beside_the_model_and_never_unpickled(fake, host, tmp_path):
    proof = tmp_path / "the-tripwire-works"
    pickle.loads(tripwire_pickle(proof))  # our own bytes: proves the trap works
    assert proof.exists()  # loading such a pickle does leave its marker
    marker = tmp_path / "unpickled"
    scaler = tripwire_pickle(marker)
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", model_artifact("v2", extra={"scaler.pkl": scaler}))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert (host.models_dir / "scaler.pkl").read_bytes() == scaler
    assert not marker.exists()


# -- regressions: bugs these tests found, since fixed ------------------------------------------


@pytest.mark.parametrize("build", [_oversized, _high_ratio], ids=["oversized", "high-ratio"])
async def test_a_zip_over_a_limit_is_counted_as_too_large(
    fake, models_dir, start_host, tmp_path, build
):
    host = await start_host(fake_settings(fake, models_dir, models={"max_uncompressed_mb": 2}))
    fake.add_artifact(fake.add_run(), "trained-model", hostile_artifact(tmp_path, build(tmp_path)))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    metrics = host.monitoring.render()[0].decode().splitlines()
    assert 'model_sync_artifacts_total{outcome="rejected",reason="too_large"} 1.0' in metrics


# -- one poison artifact is rejected, the next one still installs (issue 8) ---------------------


async def test_a_poison_artifact_is_rejected_and_the_next_one_installs_in_the_same_cycle(
    fake, host, tmp_path
):
    run = fake.add_run()
    good = fake.add_artifact(run, "trained-model-a", model_artifact("v2"))
    deep = b'{"version": "x", "d": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    poison = fake.add_artifact(
        run,
        "trained-model-b",
        hostile_artifact(tmp_path, [("unified_brain.onnx", b"m"), ("metadata.json", deep)]),
    )

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.artifact_record(poison.id)["outcome"] == "rejected"
    assert "nested" in host.artifact_record(poison.id)["reason"]
    assert host.artifact_record(good.id)["outcome"] == "installed"
    assert host.serving() == {SLOT: "v2"}


async def test_an_unexpected_error_on_one_artifact_rejects_it_and_the_cycle_goes_on(
    fake, host, monkeypatch
):
    run = fake.add_run()
    good = fake.add_artifact(run, "trained-model-a", model_artifact("v2"))
    poison = fake.add_artifact(run, "trained-model-b", model_artifact("v9"))
    installer = host.sync._installer
    real = installer.install_zip

    async def install_zip(path, origin):
        if origin.artifact_id == poison.id:
            raise RuntimeError("a bug in handling this artifact")
        return await real(path, origin)

    monkeypatch.setattr(installer, "install_zip", install_zip)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    record = host.artifact_record(poison.id)
    assert (record["outcome"], "a bug in handling this artifact" in record["reason"]) == (
        "rejected",
        True,
    )
    assert host.artifact_record(good.id)["outcome"] == "installed"
