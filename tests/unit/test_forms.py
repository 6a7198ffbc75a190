"""Forms at the edge: exactly the expected fields, each one plain text (checklist items 15 and 24)."""

from __future__ import annotations

import pytest

from chat.errors import ValidationError
from chat.web.forms import MAX_FIELD_LENGTH, read_form
from chat.web.pages import safe_next

LOGIN = ("username", "password", "next")


def form(**fields: str | list[str]) -> dict[str, list[bytes]]:
    """Tornado's ``body_arguments``: each name to its list of raw values."""
    return {
        name: [v.encode() for v in (value if isinstance(value, list) else [value])] for name, value in fields.items()
    }


def test_the_named_fields_come_back_stripped_and_missing_ones_empty() -> None:
    assert read_form(form(username=" alice ", password="pw", _xsrf="token"), LOGIN) == {
        "username": "alice",
        "password": "pw",
        "next": "",
    }


@pytest.mark.parametrize("name", ["username[$ne]", "password[$gt]", "$where", "user.name", "username[]", "extra"])
def test_a_field_the_form_does_not_have_is_refused(name: str) -> None:
    # PHP- and Express-style parsers turn username[$ne]=x into an operator
    # object; here it is not even a field of the form.
    with pytest.raises(ValidationError):
        read_form({**form(username="alice", password="pw"), name: [b"x"]}, LOGIN)


def test_a_field_given_twice_is_refused_not_turned_into_a_list() -> None:
    with pytest.raises(ValidationError):
        read_form(form(username=["alice", "bob"], password="pw"), LOGIN)


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb", "a\x1bb", "a\x7fb", "a\x85b"])
def test_control_characters_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        read_form(form(username=value), LOGIN)


def test_a_tab_is_allowed_in_a_pasted_password() -> None:
    assert read_form(form(password="a\tb"), LOGIN)["password"] == "a\tb"


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(ValidationError):
        read_form({"username": [b"\xff\xfe"]}, LOGIN)


def test_a_field_over_the_limit_is_refused_not_echoed() -> None:
    read_form(form(username="x" * MAX_FIELD_LENGTH), LOGIN)
    with pytest.raises(ValidationError):
        read_form(form(username="x" * (MAX_FIELD_LENGTH + 1)), LOGIN)


def test_uploaded_files_are_refused() -> None:
    with pytest.raises(ValidationError):
        read_form({}, LOGIN, files=True)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/rooms/abc", "/rooms/abc"),
        ("/rooms?x=1", "/rooms?x=1"),
        (None, "/rooms"),
        ("", "/rooms"),
        ("https://evil.example/", "/rooms"),
        ("//evil.example/", "/rooms"),
        ("/\\evil.example", "/rooms"),
        ("/\t/evil.example", "/rooms"),  # browsers drop the tab: //evil.example
        ("/\n/evil.example", "/rooms"),
        ("/x\r\nSet-Cookie: a=b", "/rooms"),  # would end the Location header
        ("/x\x00", "/rooms"),
        ("rooms", "/rooms"),
        ("/" + "x" * 5000, "/rooms"),
    ],
)
def test_next_is_a_same_site_path_without_control_characters(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
