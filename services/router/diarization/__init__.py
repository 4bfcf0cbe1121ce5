"""Diarization (who spoke when) as a SpeechRoute of task stt: VAD, speaker embeddings of sliding windows, clustering,
and Whisper's words aligned to the speakers. ``clustering`` and ``turns`` are pure; ``pipeline`` calls the services."""
