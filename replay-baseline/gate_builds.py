#!/usr/bin/env python3
"""Offline replay gate between two builds of the filter: the seed baseline
(or any baseline) through two real Envoys with the same configuration —
primary = OLD .wasm, shadow = NEW .wasm (default: the current build) — and
`sluice-replay run` comparing them. Exit status is the gate's.

    python3 replay-baseline/gate_builds.py --old /tmp/old/sluice_filter.wasm
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))
sys.path.insert(0, str(ROOT / "replay-baseline/seed"))
import launch  # noqa: E402
import make_seed  # noqa: E402

SEED = ROOT / "replay-baseline/baselines/seed-v1.jsonl"
REPLAY = ROOT / "target/release/sluice-replay"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path, help="primary .wasm")
    ap.add_argument("--new", type=Path, default=launch.WASM, help="shadow .wasm")
    ap.add_argument("--baseline", type=Path, default=SEED)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    cfg = make_seed.replay_config()
    cfg.pop("capture", None)
    wd = Path(tempfile.mkdtemp(prefix="sluice-gate-"))
    (wd / "mock").mkdir()
    mock = launch.Mock(wd / "mock", replay=[a.baseline])
    try:
        with launch.Stack(cfg, workdir=wd / "old", mock=mock, wasm=a.old) as old, \
                launch.Stack(cfg, workdir=wd / "new", mock=mock, wasm=a.new) as new:
            out = a.json_out or wd / "report.json"
            p = subprocess.run(
                [str(REPLAY), "run", "--baseline", str(a.baseline), "--primary", old.url,
                 "--shadow", new.url, "--upstream-log", mock.url,
                 "--api-key", make_seed.REPLAY_KEY, "--json-out", str(out),
                 "--max-seconds", "120"], timeout=300)
            return p.returncode
    finally:
        mock.stop()


if __name__ == "__main__":
    sys.exit(main())
