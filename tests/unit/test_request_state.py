"""Per-request state is declared, typed and bound in one way: RequestField (services/core/runtime/request_state.py).

No module makes a context variable of its own, each layer declares its own fields (that core imports none of the
higher layers' is tests/unit/test_layout.py's check), and ``note_usage`` takes only the usage figures the audit
record has.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from services.core.runtime.request_state import RequestField, declared

ROOT = Path(__file__).resolve().parents[2]
DECLARATION = ROOT / "services" / "core" / "runtime" / "request_state.py"


def _python(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def test_no_module_makes_a_context_variable_but_the_declaration():
    makers = []
    for path in _python("services", "operator"):
        for node in ast.walk(ast.parse(path.read_text())):
            named = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if named == "ContextVar" and path != DECLARATION:
                makers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert makers == []


def test_every_field_a_request_carries_is_declared_with_its_owner():
    import services.auth.guard  # noqa: F401 - each layer declares its own fields where it owns them
    import services.core.http.unsupported  # noqa: F401
    import services.router.upstream.admission  # noqa: F401

    fields = declared()
    assert set(fields) == {"timing", "client_call", "request_record", "ignored_fields", "log_context"}
    assert all(field.doc for field in fields.values())


async def test_a_bound_value_is_seen_inside_the_block_and_its_tasks_and_nowhere_after():
    from services.core.runtime import request_state

    field: RequestField[str] = RequestField("test_only_value", "a value for this test")

    async def reader() -> str | None:
        return field.get()

    try:
        with field.bound("outer"):
            with field.bound("inner"):
                assert await asyncio.create_task(reader()) == "inner"
            assert field.get() == "outer"
        assert field.get() is None
    finally:
        request_state._DECLARED.pop("test_only_value")  # the other tests see the project's fields only


def test_a_field_is_declared_once():
    with pytest.raises(ValueError, match="already declared"):
        RequestField("timing", "a second timing")


def test_note_usage_sets_the_figures_it_is_given_and_keeps_the_others():
    from services.auth.guard import REQUEST_RECORD, RequestRecord, note_usage

    record = RequestRecord("req_1", "POST", "/v1/audio/speech", None, characters=7)
    with REQUEST_RECORD.bound(record):
        note_usage(audio_seconds_out=2.5)
        note_usage(audio_seconds_in=None)
    assert (record.audio_seconds_out, record.characters, record.audio_seconds_in) == (2.5, 7, None)
    note_usage(audio_seconds_out=9.0)  # outside a request: nothing to note, nothing fails
    assert record.audio_seconds_out == 2.5


def test_a_misspelt_usage_figure_is_an_error_and_a_type_error(tmp_path):
    from services.auth.guard import note_usage

    with pytest.raises(TypeError):
        note_usage(audio_second_in=1.0)  # type: ignore[call-arg]
    probe = tmp_path / "probe.py"
    probe.write_text("from services.auth.guard import note_usage\n\nnote_usage(audio_second_in=1.0)\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir",
                           str(tmp_path / "cache"), "--no-error-summary", str(probe)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and 'Unexpected keyword argument "audio_second_in"' in done.stdout, done.stdout
