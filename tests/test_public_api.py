"""The embeddable surface: what `app` exports (pinned, as httpx's test_exported_members does),
and the README's "Embedding in a larger bot" example, run as written against a real
ClientSession, the fake GitHub on loopback and a temporary models directory."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

import app
from app.brain.brain import TradingBrain
from app.containers import resolve
from app.settings import Settings
from tests.conftest import ROOT
from tests.fakes.github import FakeGitHub
from tests.sync_host import fake_settings, good_run

EXPORTED = {
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
}


def test_exported_members() -> None:
    assert set(app.__all__) == EXPORTED
    public = {
        name
        for name in dir(app)
        if not name.startswith("_") and not isinstance(getattr(app, name), ModuleType)
    }
    assert public == EXPORTED  # nothing public that is not declared (subpackages aside)
    for name in app.__all__:
        member = getattr(app, name)
        assert member.__module__.startswith("app."), name


def test_star_import_gives_the_declared_names() -> None:
    namespace: dict[str, Any] = {}
    exec("from app import *", namespace)

    assert set(namespace) - {"__builtins__"} == EXPORTED


def test_importing_the_package_stays_light() -> None:
    """`python -m app` imports the package before its re-exec: that must cost nothing."""
    probe = "import sys, app; print(sorted({'aiohttp', 'onnxruntime', 'numpy'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "[]"


# -- the README's example -------------------------------------------------------------------------


def readme_embedding_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Embedding in a larger bot", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the section has no python block"
    return match.group(1)


async def test_the_readme_embedding_example_runs(fake: FakeGitHub, models_dir: Path) -> None:
    settings = fake_settings(fake, models_dir)
    good_run(fake, "v2")
    opened: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def open_my_session() -> AsyncIterator[aiohttp.ClientSession]:
        async with aiohttp.ClientSession() as session:
            opened.append(session)
            yield session

    def make_my_brain(config: Settings) -> TradingBrain:
        return TradingBrain(config.brain)

    # The names the example leaves to its reader: the settings, a session, a brain.
    namespace: dict[str, Any] = {
        "settings": settings,
        "open_my_session": open_my_session,
        "make_my_brain": make_my_brain,
    }
    exec(compile(readme_embedding_example(), "README.md", "exec"), namespace)

    host = namespace["Host"]()
    await host.init_resources()
    try:
        brain: TradingBrain = host.brain()
        await (await resolve(host.core.models)).start()  # loads the brain from models/
        sync: app.CloudModelSynchronizationService = await resolve(host.core.sync)
        report = await sync.synchronize_models(force=True)
    finally:
        await host.shutdown_resources()

    assert report.outcome == "installed", report.reason
    assert brain.decide([0.1] * 16).versions == {"unified_brain": "v2"}
    [session] = opened  # Core used the host's session and opened none of its own
    assert session.closed
