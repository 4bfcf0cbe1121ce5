import os
import tempfile

import httpx
import pytest

from tests.file_server import FileServer
from tests.hub_mirror import hub_mirror_running
from tests.oci_registry import oci_registry_running

# Joined weights (Whisper base) go to a cache the test session shares across runs of the suite.
os.environ.setdefault("HARMONY_CACHE_DIR", os.path.join(tempfile.gettempdir(), "harmony-test-cache"))
# The engine's state (database, registered voices) goes to a directory of this session, never ~/.local/share.
os.environ.setdefault("HARMONY_DATA_DIR", tempfile.mkdtemp(prefix="harmony-test-data-"))

pytest_plugins = ["tests.databases"]

# The suite runs on shared, loaded machines: an httpx call that sets no timeout of its own waits 60 s, not
# httpx's default 5 s (the default Timeout object is read at each call, so changing it here is enough).
_default_timeout = httpx._config.DEFAULT_TIMEOUT_CONFIG
_default_timeout.connect = _default_timeout.read = _default_timeout.write = _default_timeout.pool = 60.0


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory):
    """A Hugging Face Hub on loopback (olah behind a counting proxy): tests/hub_mirror.py."""
    with hub_mirror_running(workdir=tmp_path_factory.mktemp("hub-mirror")) as mirror:
        yield mirror


@pytest.fixture(scope="session")
def file_server(tmp_path_factory):
    """An HTTP file server with ranges, counts and cuts over a temporary folder: tests/file_server.py."""
    with FileServer(tmp_path_factory.mktemp("file-server")) as server:
        yield server


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory):
    """A real OCI registry on loopback (the distribution registry, and a second one that asks for a login),
    pushed to with oras-py: tests/oci_registry.py."""
    with oci_registry_running(tmp_path_factory.mktemp("oci-registry")) as registry:
        yield registry
