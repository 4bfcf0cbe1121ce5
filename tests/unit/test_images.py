"""The image build files, read (no Docker here): the CPU image carries no CUDA library, the CUDA image
runs the ONNX models on onnxruntime's CUDA provider, and both install what pyproject.toml pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU = (ROOT / "docker" / "Dockerfile").read_text()
CUDA = (ROOT / "docker" / "Dockerfile.cuda").read_text()


def instructions(dockerfile: str) -> str:
    """The Dockerfile without its comments, continuation lines joined."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\\n", " ", "\n".join(lines))


def pinned(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(rf"{name}\s*[=<>]", d)).replace(" ", "")


def test_cpu_image_takes_torch_from_the_cpu_index_at_the_pinned_version():
    run = instructions(CPU)
    torch = pinned("torch")
    assert torch.startswith("torch==")
    install = re.search(r'pip install --index-url https://download\.pytorch\.org/whl/cpu "([^"]+)"', run)
    assert install and install.group(1) == torch
    assert run.index("download.pytorch.org/whl/cpu") < run.index("pip install . ")  # before the project


def test_cpu_image_refuses_cuda_wheels():
    run = instructions(CPU)
    assert "onnxruntime-gpu==" in run and "nvidia-" in run and "exit 1" in run  # the guard
    assert "pip install onnxruntime-gpu" not in run and "[cuda" not in run
    assert "nvidia/cuda" not in run


def test_cuda_image_swaps_onnxruntime_for_its_gpu_build():
    run = instructions(CUDA)
    assert re.search(r"FROM nvidia/cuda:12\.\d+\.\d+-cudnn-runtime", run)  # CTranslate2: CUDA 12 + cuDNN 9
    uninstall, install = run.index("pip uninstall -y onnxruntime"), run.index('"onnxruntime-gpu[cuda,cudnn]==')
    assert run.index("pip install . ") < uninstall < install
    assert "CUDAExecutionProvider' in onnxruntime.get_available_providers()" in run


def test_both_images_run_as_the_charts_user_with_the_cache_dir():
    for dockerfile in (CPU, CUDA):
        run = instructions(dockerfile)
        assert "USER 10001:10001" in run and "HARMONY_CACHE_DIR=/var/cache/harmony" in run
        assert "COPY --from=build /opt/venv /opt/venv" in run  # no compiler in the final image
