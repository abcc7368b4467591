#!/usr/bin/env python3
"""Runs a command with a throwaway PostgreSQL cluster on loopback and
SLUICE_TEST_POSTGRES set to its URL, then removes the cluster: the store's
Rust tests run against sqlite and, through this, against Postgres too
(`make unit`). Usage: scripts/with-postgres.py CMD [ARGS...]"""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "envoy"))
import launch  # noqa: E402


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    pg = launch.Postgres()
    try:
        env = {**os.environ, "SLUICE_TEST_POSTGRES": pg.url}
        return subprocess.call(sys.argv[1:], env=env)
    finally:
        pg.remove()


if __name__ == "__main__":
    sys.exit(main())
