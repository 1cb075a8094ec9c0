"""The status report reads state without disturbing a cycle that is still running."""

from __future__ import annotations

from app.install.installer import ModelInstaller
from app.services.github_types import CachedPage
from app.services.state import StateStore
from app.settings import Settings
from app.status import status_report

URL = "https://api.github.com/repos/o/r/actions/runs?per_page=100"


async def test_status_during_a_cycle_keeps_what_the_cycle_has_not_flushed(
    models: ModelInstaller, settings: Settings
) -> None:
    state = StateStore(settings.models_dir)
    state.load()
    state.put(URL, CachedPage(etag='"abc"', items=({"id": 1},), next_url=None))
    state.mark_exhausted(42)

    report = status_report(models, state)  # e.g. GET /status in the middle of a sync
    state.flush()  # the cycle ends

    assert report["models"]["unified_brain"]["version"] == "embedded-1"
    saved = StateStore(settings.models_dir).load()
    assert saved.etags[URL].etag == '"abc"'
    assert saved.exhausted_runs == [42]
