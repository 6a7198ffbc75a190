"""Reading submitted forms at the edge: exactly the expected fields, each one plain text.

Storage never sees a form field that is not a string, and no field name can
smuggle an operator in (``username[$ne]=x``, ``$where=...``): a form may
carry only the fields its handler names (plus Tornado's ``_xsrf``), each at
most once. Control characters are refused: nothing typed into our forms
contains them, and CR/LF in particular must never reach a header (a
redirect's ``Location``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..errors import ValidationError
from ..wire.text import MAX_SAFE_INTEGER, has_control_characters, valid_seq

# Far more than any field we read needs (usernames 32, room names 64,
# passwords 72 bytes, next a path); the server's body limit bounds the rest.
MAX_FIELD_LENGTH = 2048
XSRF_FIELD = "_xsrf"


def read_form(arguments: Mapping[str, list[bytes]], fields: Collection[str], files: bool = False) -> dict[str, str]:
    """The ``fields`` of a submitted form, each a stripped string ("" when absent).

    Raises :class:`~chat.errors.ValidationError` (a 400) for a field not in
    ``fields``, a field given twice, uploaded files, bytes that are not
    UTF-8, a field over :data:`MAX_FIELD_LENGTH` or control characters
    (a tab is allowed: a pasted password may hold one).
    """
    if files:
        raise ValidationError("this form takes no files")
    for name, values in arguments.items():
        if name == XSRF_FIELD:  # Tornado checked it already
            continue
        if name not in fields:
            raise ValidationError(f"unexpected form field {name!r}")
        if len(values) != 1:
            raise ValidationError(f"form field {name!r} given {len(values)} times")
    form: dict[str, str] = {}
    for name in fields:
        raw = arguments.get(name, [b""])[0]
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(f"form field {name!r} is not UTF-8 text") from None
        if len(value) > MAX_FIELD_LENGTH:
            raise ValidationError(f"form field {name!r} is too long")
        if has_control_characters(value, allowed="\t"):
            raise ValidationError(f"form field {name!r} contains control characters")
        # Stripped, as Tornado's get_body_argument did before (passwords included).
        form[name] = value.strip()
    return form


def read_seq(name: str, text: str, minimum: int = 0) -> int:
    """A seq from a query string (``since``, ``before``), or a ValidationError (a 400) naming it.

    Digits only ("+1", "1_000", "²" and "1e3" are not), and range-checked
    before storage sees it: 2^63 overflows SQLite, and int() of thousands of
    digits is slow (Python refuses past 4300).
    """
    problem = f"{name} must be an integer from {minimum} to {MAX_SAFE_INTEGER}"
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_SAFE_INTEGER)):
        raise ValidationError(problem)
    seq = int(text)
    if not valid_seq(seq) or seq < minimum:
        raise ValidationError(problem)
    return seq
