"""An OCI image (a "modelcar") pulled outside Kubernetes with the ``oras`` command, a real OCI client.

On Kubernetes the operator mounts the image as an image volume and the model service reads it as a path, so
nothing is pulled there. Elsewhere the files of the image's layers (an OCI artifact pushed with ``oras push``,
or a modelcar's ``/models`` folder) are pulled with ``oras pull``; registry credentials are oras' own (``oras
login``, the Docker config). Without ``oras`` on the PATH the source is refused, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from services.core.weights import WeightsError

ORAS_TIMEOUT_S = 3600


def pull(reference: str, target: Path) -> tuple[Path, list[str]]:
    """The folder of the weights that ``oras pull`` put into the empty folder ``target``, and their relative
    paths (a modelcar's ``models/`` folder is the root)."""
    oras = shutil.which("oras")
    if oras is None:
        raise WeightsError(f"source.oci '{reference}' needs an OCI client here: install the oras command "
                           "(https://oras.land), or serve the model on Kubernetes, where the operator mounts the "
                           "image as a volume; or use an hf, url or path source")
    try:
        done = subprocess.run([oras, "pull", reference, "--output", str(target), "--no-tty"], capture_output=True,
                              text=True, timeout=ORAS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise WeightsError(f"oras pull {reference} did not finish in {ORAS_TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WeightsError(f"oras pull {reference} failed: {tail[0]}")
    root = target / "models" if (target / "models").is_dir() else target
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if not files:
        raise WeightsError(f"oras pull {reference} gave no files")
    return root, files
