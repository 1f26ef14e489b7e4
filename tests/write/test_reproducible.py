"""The same input, settings and seed give the same bytes: the README's demo command, run twice
into one folder with the smoke-test stage on (on the CPU), leaves every file as it was, manifest
and reports included. Only smoke_test.json, which holds the stage's timings, may differ, and the
manifest names it without a checksum."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def _demo(output: Path) -> None:
    """The README's first command (`masked-shards run --output out/demo --overwrite`), smoke test on."""
    done = subprocess.run([sys.executable, "-m", "masked_shards.cli", "run", "--output", str(output), "--overwrite", "--smoke-test", "cpu", "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "smoke test passed" in done.stdout


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_demo_command_twice_writes_the_same_bytes(tmp_path):
    output = tmp_path / "demo"
    _demo(output)
    first = _files(output)
    _demo(output)
    second = _files(output)
    assert sorted(first) == sorted(second)
    assert {"manifest.json", "coverage_report.json", "coverage_report.md", "coverage_report.html", "smoke_test.json"} <= set(first)
    differ = sorted(name for name in first if first[name] != second[name])
    assert differ in ([], ["smoke_test.json"])  # its timings: run to run, never in the report
    manifest = json.loads(second["manifest.json"])
    assert manifest["smoke_test"] == {"passed": True, "device": "cpu", "file": "smoke_test.json"}
    assert "smoke_test.json" not in {f["path"] for f in manifest["report_files"]}
    assert json.loads(second["coverage_report.json"])["smoke_test"]["passed"] is True
    timings = json.loads(second["smoke_test.json"])
    assert timings["seconds"] > 0 and timings["checks"]["learns"]["tokens_per_second"] > 0
