"""Harmony Speech Engine: an OpenAI-compatible, Kubernetes-native speech inference platform."""

__version__ = "0.1.0"
