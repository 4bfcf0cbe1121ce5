import os
import tempfile

# Joined weights (Whisper base) go to a cache the test session shares across runs of the suite.
os.environ.setdefault("HARMONY_CACHE_DIR", os.path.join(tempfile.gettempdir(), "harmony-test-cache"))
# The engine's state (database, registered voices) goes to a directory of this session, never ~/.local/share.
os.environ.setdefault("HARMONY_DATA_DIR", tempfile.mkdtemp(prefix="harmony-test-data-"))

pytest_plugins = ["tests.databases"]
