"""Build the embedded default model, models/unified_brain.onnx, deterministically.

    python scripts/build_default_model.py [--check]

Same code, same bytes: `--check` fails when the committed file differs from a fresh build
(the test suite runs it), so the file in the repository is always the one this script makes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.onnx_models import decision_model  # noqa: E402 - after the path is set

TARGET = ROOT / "models" / "unified_brain.onnx"
VERSION = "embedded-1"


def build() -> bytes:
    return decision_model(seed=20250108, version=VERSION).SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args()
    data = build()
    if args.check:
        if not TARGET.is_file() or TARGET.read_bytes() != data:
            print(f"{TARGET} differs from a fresh build: run {Path(__file__).name}")
            return 1
        print(f"{TARGET} is up to date")
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(data)
    print(f"wrote {TARGET} ({len(data)} bytes, version {VERSION})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
