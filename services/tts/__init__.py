"""Text-to-speech service."""
