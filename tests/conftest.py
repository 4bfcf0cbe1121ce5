import os
import tempfile

# Joined weights (Whisper base) go to a cache the test session shares across runs of the suite.
os.environ.setdefault("HARMONY_CACHE_DIR", os.path.join(tempfile.gettempdir(), "harmony-test-cache"))
