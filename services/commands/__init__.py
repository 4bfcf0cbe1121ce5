"""The client-side commands of ``harmony``: ``transcribe``, ``speak`` and ``batch``, each in its own module, and
``pull`` and ``models`` (the model cache).

Each module adds its parser (``add_parser``) and sets ``handler``, the function that runs it.
"""

from __future__ import annotations

import argparse

from services.commands import batch, pull, speak, transcribe
from services.commands.embedded import EngineFailed

NAMES = ("transcribe", "speak", "batch", "pull", "models")


def add_commands(commands) -> None:
    for module in (transcribe, speak, batch, pull):
        module.add_parser(commands)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; Ctrl-C ends it with status 130 (the embedded engine is stopped on the way)."""
    try:
        return args.handler(args)
    except EngineFailed as exc:
        print(f"harmony: {exc}", flush=True)
        return 1
    except KeyboardInterrupt:
        print("harmony: interrupted", flush=True)
        return 130
