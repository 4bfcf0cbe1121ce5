"""Issue 9 item 7, proof: schemathesis over the OpenAPI schema that ``harmony serve`` publishes.

Deterministic (``derandomize``: the examples follow from the schema alone, no database of past
failures) and bounded (``MAX_EXAMPLES`` per operation). The only check is ``not_a_server_error``:
whatever schemathesis sends, the real engine (its model services running) answers without a 5xx.
Many routes read multipart forms by hand, so the schema does not describe their bodies; what it
publishes is covered.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 20


@pytest.fixture(scope="module")
def harmony_schema(harmony):
    return schemathesis.openapi.from_url(harmony.url + "/openapi.json")


def operations(schema) -> dict[str, object]:
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[operation.label] = operation
    return found


def server_errors(operation) -> list[str]:
    """Up to ``MAX_EXAMPLES`` deterministic cases of ``operation``; the first 5xx it got, if any."""
    failures: list[str] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        try:
            case.call_and_validate(checks=[not_a_server_error], timeout=30)
        except AssertionError as exc:  # schemathesis' check failure (a FailureGroup is one too)
            failures.append(f"{operation.label}: {exc}\n{case.as_curl_command()}")
            raise

    try:
        run()
    except Exception:  # noqa: BLE001 - hypothesis re-raises the (shrunk) failure; it is recorded above
        if not failures:
            raise
    return failures[-1:]


def test_schema_publishes_the_api(harmony_schema):
    labels = operations(harmony_schema)
    for label in ("POST /v1/audio/speech", "GET /v1/models/{model_id}", "GET /v1/audio/voices/{voice_id}",
                  "DELETE /v1/audio/voices/{voice_id}"):
        assert label in labels, sorted(labels)


def test_no_server_errors(harmony_schema):
    failures = [f for operation in operations(harmony_schema).values() for f in server_errors(operation)]
    assert not failures, "\n\n".join(failures)
