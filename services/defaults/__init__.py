"""The embedded default config of ``harmony serve`` (serve.yaml), shipped as package data."""
