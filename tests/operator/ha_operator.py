"""The operator's handlers as a kopf module for a process of its own (test_leader_election.py runs several).

kmock never bumps resourceVersion, so kopf would wait its whole consistency timeout (5 s) for its own patches to
come back: kept short, as harness.running_operator does for the operator run in a thread.
"""

from __future__ import annotations

from typing import Any

import kopf

import harmony_operator.handlers  # noqa: F401 - registers the operator's handlers


@kopf.on.startup()
def short_consistency_wait(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.consistency_timeout = 0.3
