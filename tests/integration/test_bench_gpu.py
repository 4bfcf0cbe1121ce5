"""bench/gpu.py run as a user runs it: where CUDA breaks it says so and exits 1 (no traceback), and its CPU dry run
(``--device cpu --quick``) goes through the whole flow, preflight, STT, TTS and realtime, with real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*argv: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.gpu", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_where_cuda_breaks_the_preflight_says_what_and_exits_1(tmp_path):
    # no CUDA device visible, whatever this machine has: CTranslate2 sees none, an ONNX session gets none
    run = bench("--preflight-only", "--json", str(tmp_path / "gpu.json"), timeout=120,
                env={"CUDA_VISIBLE_DEVICES": ""})
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "Traceback" not in out + run.stderr
    lines = out.splitlines()
    assert lines[0].startswith("# bench/gpu.py  device=cuda")
    ct2 = next(line for line in lines if "ctranslate2 cuda" in line)
    assert ct2.startswith("FAIL") and "0 CUDA devices" in ct2
    models = [line for line in lines if line.split()[1:2] == ["model"]]
    assert len(models) == 9 and all(line.startswith("FAIL") and "did not load:" in line for line in models), models
    assert any("CUDA" in line for line in models)  # the engine's own reason
    assert all(line.startswith("SKIP") for line in lines if "first request" in line)
    assert lines[-1].startswith("# result: FAIL: ") and "ctranslate2 cuda" in lines[-1]
    body = json.loads((tmp_path / "gpu.json").read_text())
    assert "ctranslate2 cuda (faster-whisper)" in body["failed"]
    assert (tmp_path / "gpu.serve.log").exists()


@pytest.mark.slow
def test_the_cpu_dry_run_measures_every_part(tmp_path):
    run = bench("--device", "cpu", "--quick", "--json", str(tmp_path / "gpu.json"), timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "FAIL" not in out and out.splitlines()[-1] == "# result: PASS"
    assert "PASS  model whisper-tiny.en-b2 on cpu" in out and "runs on cpu (int8)" in out
    body = json.loads((tmp_path / "gpu.json").read_text())
    assert [(r["model"], r["batch"]) for r in body["stt"]] == [("whisper-tiny.en", 1), ("whisper-tiny.en", 2)]
    assert all(r["audio_s_per_s"] > 0 and r["requests"] >= r["batch"] for r in body["stt"])
    assert [r["clients"] for r in body["tts"]] == [1, 2] and all(r["audio_s_per_s"] > 0 for r in body["tts"])
    assert [r["streams"] for r in body["realtime"]] == [2] and body["realtime"][0]["turns"] >= 1
    assert body["failed"] == [] and body["facts"]["device"] == "cpu"
    for header in ("audio s / wall s", "first byte p50", "end of speech -> completed p50"):
        assert header in out
