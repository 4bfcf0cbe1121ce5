import os
import tempfile

import httpx

# Joined weights (Whisper base) go to a cache the test session shares across runs of the suite.
os.environ.setdefault("HARMONY_CACHE_DIR", os.path.join(tempfile.gettempdir(), "harmony-test-cache"))
# The engine's state (database, registered voices) goes to a directory of this session, never ~/.local/share.
os.environ.setdefault("HARMONY_DATA_DIR", tempfile.mkdtemp(prefix="harmony-test-data-"))

pytest_plugins = ["tests.databases"]

# The suite runs on shared, loaded machines: an httpx call that sets no timeout of its own waits 60 s, not
# httpx's default 5 s (the default Timeout object is read at each call, so changing it here is enough).
_default_timeout = httpx._config.DEFAULT_TIMEOUT_CONFIG
_default_timeout.connect = _default_timeout.read = _default_timeout.write = _default_timeout.pool = 60.0
