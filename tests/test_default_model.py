"""The embedded default model: what the build script makes, a valid decision model, committed."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_default_model.py"
EMBEDDED_MODEL = ROOT / "models" / "unified_brain.onnx"


def test_the_committed_model_is_what_the_script_builds() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The build script as a module, writing to a file in tmp_path instead of models/."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script prepends the repo root
    spec = importlib.util.spec_from_file_location("build_default_model", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "TARGET", tmp_path / "models" / "unified_brain.onnx")
    return module


def run_script(script: ModuleType, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    code: int = script.main()
    return code


def test_check_fails_on_a_stale_or_missing_file_and_a_build_fixes_it(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    target: Path = script.TARGET

    assert run_script(script, monkeypatch, "--check") == 1  # missing
    target.parent.mkdir(parents=True)
    shutil.copyfile(EMBEDDED_MODEL, target)
    target.write_bytes(target.read_bytes() + b"\0")
    assert run_script(script, monkeypatch, "--check") == 1  # stale

    assert run_script(script, monkeypatch) == 0
    assert target.read_bytes() == EMBEDDED_MODEL.read_bytes()  # same code, same bytes
    assert run_script(script, monkeypatch, "--check") == 0


def test_the_embedded_model_is_a_small_decision_model() -> None:
    session = ort.InferenceSession(str(EMBEDDED_MODEL), providers=["CPUExecutionProvider"])

    [features] = session.get_inputs()
    [probs] = session.get_outputs()
    assert (features.name, features.type, features.shape[1]) == ("features", "tensor(float)", 16)
    assert (probs.name, probs.type, probs.shape[1]) == ("probs", "tensor(float)", 3)
    assert session.get_modelmeta().custom_metadata_map["version"] == "embedded-1"
    assert EMBEDDED_MODEL.stat().st_size < 64 * 1024


def test_the_embedded_model_is_not_ignored_by_git() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    ignored = subprocess.run(
        [git, "check-ignore", "--quiet", "models/unified_brain.onnx"], cwd=ROOT, check=False
    )

    assert ignored.returncode == 1  # 1: not ignored, so a fresh clone has it
