"""Issue 9 item 7 and issue 23, proof: schemathesis over the OpenAPI schema that ``harmony serve`` publishes.

Every POST operation publishes its request body (multipart or JSON, generated from the route's pydantic model), so
schemathesis generates bodies for all of them, files included. Deterministic (``derandomize``: the examples follow
from the schema alone, no database of past failures) and bounded (``MAX_EXAMPLES`` per operation, small enough that
this file runs in a couple of minutes). The only check is ``not_a_server_error``: whatever schemathesis sends, the
real engine (its model services running) answers without a 5xx. Run with ``-s`` to see how many cases it sent.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def harmony_schema(harmony):
    return schemathesis.openapi.from_url(harmony.url + "/openapi.json")


def operations(schema) -> dict[str, object]:
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[operation.label] = operation
    return found


def run_operation(operation) -> tuple[int, list[str]]:
    """Up to ``MAX_EXAMPLES`` deterministic cases of ``operation``: how many were sent, and the first 5xx, if any."""
    failures: list[str] = []
    sent = 0

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        nonlocal sent
        sent += 1
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
    return sent, failures[-1:]


def test_schema_publishes_the_api(harmony_schema):
    labels = operations(harmony_schema)
    for label in ("POST /v1/audio/speech", "POST /v1/audio/transcriptions", "POST /v1/files",
                  "GET /v1/models/{model_id}", "GET /v1/audio/voices/{voice_id}", "DELETE /v1/audio/voices/{voice_id}"):
        assert label in labels, sorted(labels)


def test_every_post_publishes_its_request_body(harmony_schema):
    posts = {path: item["post"] for path, item in harmony_schema.raw_schema["paths"].items() if "post" in item}
    assert len(posts) >= 10, sorted(posts)
    missing = [path for path, op in posts.items()
               if not any(m.get("schema") for m in op.get("requestBody", {}).get("content", {}).values())]
    assert not missing, missing
    multipart = [p for p, op in posts.items() if "multipart/form-data" in op["requestBody"]["content"]]
    assert {"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/files", "/v1/audio/vad"} <= set(multipart)


def test_no_server_errors(harmony_schema):
    cases, failures, bodies = 0, [], 0
    for operation in operations(harmony_schema).values():
        sent, found = run_operation(operation)
        cases += sent
        bodies += sent if operation.body else 0
        failures += found
    print(f"\nschemathesis: {cases} cases ({bodies} with a generated body) over "
          f"{len(operations(harmony_schema))} operations, {len(failures)} with a server error")
    assert cases > 0 and bodies > 0
    assert not failures, "\n\n".join(failures)
