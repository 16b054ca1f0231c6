"""The GPU bench's pipeline (GPU JPEG decode, resize on device, bf16, writer thread) in its CPU dry
mode: it runs end to end, writes every image, and its vectors match the CPU pipeline's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_module():
    spec = importlib.util.spec_from_file_location("gpu_pipeline", BENCH / "gpu_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_indexes_every_image_with_the_cpu_vectors(tmp_path):
    out = tmp_path / "gpu.json"
    result = load_module().main(["--dry", "--json", str(out)])
    assert json.loads(out.read_text())["device"] == "CPU"
    assert result["timed"]["images"] == result["split"]["images"] == 8
    assert set(result["split"]["stages"]) >= {"read", "decode", "resize", "model", "write"}
    # The tensor path (torchvision decode + torch resize) sees nearly the pixels PIL does.
    assert result["min_cosine_vs_cpu"] > 0.98


def test_gpu_script_is_ready_to_run():
    script = BENCH / "gpu.sh"
    assert script.stat().st_mode & 0o111, "bench/gpu.sh must be executable"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    r = subprocess.run(
        [sys.executable, str(BENCH / "gpu_pipeline.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0 and "--dry" in r.stdout
