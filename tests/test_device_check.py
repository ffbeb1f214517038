"""bench/device_check.py on CPU (--quick): the GPU machine's checks run end to end, in ≤ 2 minutes.

The smoke test of the prepared device check: every check runs and writes its figures; the
correctness bars (Gram to 1e-10 of float64, the solver's supports and objectives, torchrun's
shards merged in order) hold on CPU too; the throughput bar is reported but applies on CUDA.
"""

from __future__ import annotations

import json

from bench import device_check


def test_quick_device_check_on_cpu(tmp_path, capsys):
    assert device_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert report["device"] == "cpu" and report["quick"] and report["passed"]
    assert report["seconds"] < 120, "the quick check's budget on CPU is 2 minutes"
    extraction = [c for n, c in checks.items() if n.startswith("extraction ")]
    assert [c["details"]["precision"] for c in extraction] == ["fp32", "bf16"]
    for c in extraction:  # figures measured, the bar left to a GPU
        assert c["passed"] is None and c["details"]["ratio"] > 0 and len(c["details"]["bare_img_s"]) == 1
    gram = next(c for n, c in checks.items() if n.startswith("Gram "))
    assert gram["passed"] and gram["details"]["rel_diff_cross"] <= 1e-10
    solver = next(c for n, c in checks.items() if n.startswith("solver "))
    assert solver["passed"] and solver["details"]["targets_with_other_support"] == 0
    torchrun = checks["torchrun 2 × cpu"]
    assert torchrun["passed"] and torchrun["details"]["in_order"] and torchrun["details"]["identical_store"]
    table = (tmp_path / "device_check.md").read_text().splitlines()
    assert table[2] == "| check | figure | bar | result |" and len(table) == 4 + len(checks)
    assert "| torchrun 2 × cpu |" in capsys.readouterr().out
