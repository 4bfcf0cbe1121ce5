"""Reading a form's fields without an HTTP library: any multi-dict (a field may be sent more than once).

A parsed multipart body (Starlette's ``FormData``, or any object with ``getlist``) or a
plain mapping is read through ``single``: the one value of a single-valued field, and a
400 naming the field when a client sent it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from services.core.contracts.errors import InvalidRequest


@runtime_checkable
class MultiDict(Protocol):
    """A form as a parser gives it: every value of a field, in the order sent."""

    def getlist(self, key: Any) -> list[Any]: ...


Form = MultiDict | Mapping[str, Any]


def single(form: Form, name: str) -> Any:
    """The one value of the single-valued field ``name`` (None when absent); sent twice, it is a 400 naming it
    (a multipart form may repeat a field, and silently taking one of them would hide the client's mistake)."""
    if isinstance(form, MultiDict):
        values = list(form.getlist(name))
    else:
        values = [form[name]] if name in form else []
    if len(values) > 1:
        raise InvalidRequest(f"'{name}' was sent {len(values)} times; send it once", param=name,
                             code="duplicate_parameter")
    return values[0] if values else None

