"""bench/gpu.py's pieces without a server: the config it serves, the checks, the budget, the tables.
The script end to end (CUDA failing here, and the CPU dry run): tests/integration/test_bench_gpu.py."""

from __future__ import annotations

import pytest

from bench import gpu
from services.core.contracts.specs import parse_config


def plan(*argv: str) -> gpu.Plan:
    return gpu.make_plan(gpu.parse_args(list(argv)))


def test_every_model_of_the_config_is_on_cuda_and_the_schema_takes_it():
    p = plan()
    config = gpu.bench_config(p, "/tmp/data")
    parsed = parse_config(config)
    assert {m.name: m.device for m in parsed.models} == {m["name"]: "cuda" for m in config["models"]}
    stt = {m.name: m for m in parsed.models if m.task.value == "stt"}
    for model in ("whisper-tiny.en", "whisper-base"):
        for batch in (1, 8, 32):
            spec = stt[f"{model}-b{batch}"]
            assert spec.batching.max_batch_size == batch
            assert spec.batching.instances == 1 and not spec.batching.pack_short_windows
            assert spec.compute_type == "float16"
    assert stt["whisper-tiny.en"].compute_type == "float16"  # bench/realtime.py's model, made float16
    tts = next(m for m in parsed.models if m.name == gpu.TTS_MODEL)
    assert tts.batching.max_batch_size == 16 and "tts-1" in tts.aliases
    assert any(m.name == gpu.VAD_MODEL for m in parsed.models)


def test_the_cpu_dry_run_serves_the_same_models_smaller():
    p = plan("--device", "cpu", "--quick")
    assert (p.batches, p.tts_clients, p.streams, p.turns, p.stt_models) == ([1, 2], [1, 2], 2, 1, ["whisper-tiny.en"])
    assert (p.stt_requests, p.tts_requests, p.warm_up) == ({1: 1, 2: 2}, {1: 1, 2: 2}, False)  # one round of each
    config = parse_config(gpu.bench_config(p, "/tmp/data"))
    assert {m.device for m in config.models} == {"cpu"}
    assert {m.name for m in config.models} == {"whisper-tiny.en-b1", "whisper-tiny.en-b2", "piper-en-joe",
                                               "whisper-tiny.en", "silero-vad"}
    assert {m.compute_type for m in config.models if m.task.value == "stt"} == {"int8"}


def test_full_sizes():
    p = plan()
    assert p.stt_requests == {1: 16, 8: 32, 32: 128}
    assert p.tts_clients == [1, 16] and p.streams == 16 and p.turns == 3


def test_an_unknown_model_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        gpu.parse_args(["--models", "whisper-huge"])
    assert "whisper-huge" in capsys.readouterr().err


def test_without_cuda_the_library_checks_fail_with_the_reason():
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this machine has a CUDA device")
    checks = {c.name: c for c in gpu.library_checks("cuda")}
    ct2 = checks["ctranslate2 cuda (faster-whisper)"]
    assert ct2.status == "FAIL" and "0 CUDA devices" in ct2.reason
    ort = checks["onnxruntime cuda (Piper, Silero VAD)"]
    assert ort.status in ("FAIL", "PASS")
    if ort.status == "FAIL":
        assert "no CUDAExecutionProvider" in ort.reason and "onnxruntime-gpu" in ort.reason
    assert checks["torch cuda"].status in ("SKIP", "FAIL", "PASS")
    assert all(c.line().startswith(c.status + "  ") for c in checks.values())


def test_a_cpu_run_skips_the_cuda_checks():
    assert {c.status for c in gpu.library_checks("cpu")} == {"SKIP"}


def test_the_device_each_model_logged():
    log = ("2026-12-02 INFO harmony.stt.whisper: loaded whisper-base-b8 from /cache/whisper base on cuda (float16) "
           "in 2.1s\n"
           "2026-12-02 INFO harmony.onnx: model piper-en-joe runs on CUDAExecutionProvider (device cuda)\n"
           "2026-12-02 INFO harmony.onnx: model silero-vad runs on CPUExecutionProvider (device cpu)\n")
    found = gpu.devices_in_log(log)
    assert found == {"whisper-base-b8": "cuda (float16)", "piper-en-joe": "cuda", "silero-vad": "cpu"}
    assert gpu.model_check("whisper-base-b8", "cuda", "ready", found["whisper-base-b8"]).status == "PASS"
    assert gpu.model_check("silero-vad", "cuda", "ready", found["silero-vad"]).status == "FAIL"
    failed = gpu.model_check("piper-en-joe", "cuda", "WeightsError: model piper-en-joe: device 'cuda' asked for\nmore",
                             None)
    assert failed.status == "FAIL" and failed.reason == "did not load: WeightsError: model piper-en-joe: device " \
                                                        "'cuda' asked for"
    assert gpu.model_check("x", "cuda", None, None).status == "FAIL"


def test_rounds_fit_the_time_left_and_never_drop_to_none():
    assert gpu.fit_rounds(4, 2.0, 100.0) == 4
    assert gpu.fit_rounds(4, 2.0, 5.0) == 2
    assert gpu.fit_rounds(4, 2.0, -3.0) == 1
    assert gpu.fit_rounds(4, 0.0, 1.0) == 4


def test_later_parts_get_less_when_earlier_ones_ran_long():
    now = [0.0]
    budget = gpu.Budget(540.0, clock=lambda: now[0])
    stt_end = budget.part_end("stt", ["stt", "tts", "realtime"])
    assert stt_end == pytest.approx((540 - gpu.RESERVE_S) * 5 / 10)
    now[0] = 400.0  # STT overran its share
    tts_end = budget.part_end("tts", ["tts", "realtime"])
    assert tts_end - now[0] == pytest.approx((140 - gpu.RESERVE_S) * 2 / 5)
    now[0] = 600.0
    assert budget.part_end("realtime", ["realtime"]) == now[0]


def test_tables_line_up():
    rows = [{"model": "whisper-base", "batch": 1, "requests": 16, "shortened": False, "audio_s_per_s": 50.0,
             "p50_s": 0.2, "p95_s": 0.25, "mean_batch": 1.0, "max_batch": 1.0},
            {"model": "whisper-base", "batch": 32, "requests": 64, "shortened": True, "audio_s_per_s": 1000.0,
             "p50_s": 0.3, "p95_s": 0.4, "mean_batch": 31.5, "max_batch": 32.0}]
    lines = gpu.stt_table(rows).splitlines()
    assert lines[0].startswith("model") and set(lines[1]) == {"-"}
    assert len({len(line) for line in lines}) == 1  # every column right-aligned to the header's width
    assert lines[3].split() == ["whisper-base", "32", "64*", "1000.0", "20.00x", "0.30", "0.40", "31.5", "<=32"]
    tts = gpu.tts_table([{"clients": 16, "requests": 32, "shortened": False, "first_p50_s": 0.05, "first_p95_s": 0.1,
                          "whole_p50_s": 0.3, "whole_p95_s": 0.5, "rtf_p50": 0.02, "audio_s_per_s": 400.0}])
    assert tts.splitlines()[2].split() == ["16", "concurrent", "clients", "32", "0.050", "0.100", "0.300", "0.500",
                                           "0.0200", "400.0"]
    rt = gpu.realtime_table([{"streams": 16, "turns": 48, "missing": 0, "p50_s": 0.6, "p95_s": 0.9, "stop_p50_s": 0.1,
                              "vad_lag_s": 0.2, "recall": 1.0, "deltas": 30, "keeps_up": True}])
    assert rt.splitlines()[2].split()[-1] == "yes"


def test_figures_are_written_as_strict_json(tmp_path):
    results = gpu.Results({"gpu": "none"}, json_path=str(tmp_path / "out" / "gpu.json"))
    results.realtime.append({"p50_s": float("nan")})
    results.checks.append(gpu.Check("ctranslate2 cuda (faster-whisper)", "FAIL", "0 devices"))
    assert results.finish() == 1
    import json

    body = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert body["realtime"] == [{"p50_s": None}] and body["failed"] == ["ctranslate2 cuda (faster-whisper)"]
