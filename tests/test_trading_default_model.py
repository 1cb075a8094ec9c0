"""The default model is trained on the synthetic market by a script that needs nothing of tests/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort

from app.trading.replay import ReplayInput, replay
from app.trading.synthetic import synthetic_bars

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = ROOT / "models" / "unified_brain.onnx"


def test_the_build_script_imports_nothing_from_tests() -> None:
    probe = (
        "import runpy, sys\n"
        "module = runpy.run_path('scripts/build_default_model.py', run_name='build')\n"
        "assert module['build']() == open('models/unified_brain.onnx', 'rb').read()\n"
        "print(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_default_model_has_an_edge_on_synthetic_bars_it_was_not_fitted_on() -> None:
    session = ort.InferenceSession(str(EMBEDDED_MODEL), providers=["CPUExecutionProvider"])

    def score(matrix: object) -> object:
        return session.run(["probs"], {"features": matrix})[0]

    for seed in (1, 2, 3):  # the model was fitted on seed 101
        report = replay(
            ReplayInput.from_bars(synthetic_bars(30_000, seed=seed)),
            ("embedded-1", score),
            None,
            threshold=0.65,
            cost_bps=1.0,
        )
        figures = report.incumbent.performance
        assert figures.net_return > 0, (seed, figures)
        assert figures.sharpe > 1, (seed, figures)
        assert 0 < figures.actions["hold"] < figures.decisions  # it does not trade every bar
