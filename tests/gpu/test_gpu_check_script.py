"""benchmarks/gpu_check.sh's dry run (toy sizes on the CPU), as CI runs it, so that the script cannot rot: the
checks' cpu cases pass and every benchmark of the GPU check writes its records."""

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.sh"
BENCHMARKS = ["byol_step", "byol_channels_last", "augment", "seg_fcn8s", "seg_deeplabv3", "predict_fcn8s",
              "predict_deeplabv3", "byol_compile"]


@pytest.mark.slow
def test_the_whole_dry_run_as_the_script_runs_it(tmp_path):
    # torch.compile included: minutes on a 2-core CPU
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    suite = ET.parse(tmp_path / "gpu_check.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) >= 6 and suite.get("failures") == suite.get("errors") == "0"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["gpu_check.xml"] + [f"bench_{name}.json"
                                                                                     for name in BENCHMARKS])
    for name in BENCHMARKS:
        records = json.loads((tmp_path / f"bench_{name}.json").read_text())
        assert records and all(r["samples_per_s"] > 0 for r in records), name
