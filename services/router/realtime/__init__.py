"""OpenAI Realtime transcription sessions over a WebSocket (docs/realtime.md)."""
