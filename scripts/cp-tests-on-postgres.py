#!/usr/bin/env python3
"""Runs the control plane's test binary — the one `cargo test --workspace`
just built, so nothing is compiled again — with Postgres as the store of
every test (`SLUICE_TEST_ENGINE=postgres`; `make unit`, inside
scripts/with-postgres.py)."""
import json
import os
import subprocess
import sys


def main() -> int:
    cargo = os.environ.get("CARGO", "cargo")
    out = subprocess.run([cargo, "test", "--workspace", "--no-run", "--message-format=json"],
                         check=True, capture_output=True, text=True).stdout
    exes = [m["executable"] for m in map(json.loads, out.splitlines())
            if m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["name"] == "sluice" and m["target"]["kind"] == ["bin"]
            and m["profile"]["test"]]
    if len(exes) != 1:
        print(f"expected one test binary of the control plane, found {exes}", file=sys.stderr)
        return 1
    env = {**os.environ, "SLUICE_TEST_ENGINE": "postgres"}
    return subprocess.call([exes[0], *sys.argv[1:]], env=env)


if __name__ == "__main__":
    sys.exit(main())
