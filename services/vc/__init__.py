"""Voice service: speaker embeddings, speaker profiles, voice conversion and the registered-voice store."""
