"""The STT service's windowing: the rate it decodes uploads at and the length of the windows it cuts.

The window job and its result are the task's (services/core/tasks/jobs.py); what crosses HTTP is in
services/core/contracts/wire.py.
"""

from __future__ import annotations

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
