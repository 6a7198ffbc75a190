"""The signed, timestamped session cookie."""

from __future__ import annotations

import time

import pytest
from itsdangerous.timed import TimestampSigner

from chat.web.cookies import COOKIE_NAME, SECURE_COOKIE_NAME, SECURE_XSRF_COOKIE_NAME, XSRF_COOKIE_NAME, SessionCookie

OLD_KEY = "old-" + "o" * 40
NEW_KEY = "new-" + "n" * 40
OTHER_KEY = "other-" + "x" * 40
MAX_AGE = 3600


def cookie(*keys: str, max_age: int = MAX_AGE) -> SessionCookie:
    return SessionCookie(keys or (OLD_KEY,), max_age=max_age, secure=False)


def encoded_at(jar: SessionCookie, token: str, timestamp: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """A cookie value as ``jar`` would have signed it at ``timestamp``."""
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: timestamp)
        return jar.encode(token)


def test_a_cookie_decodes_to_the_token_it_encodes() -> None:
    jar = cookie()

    assert jar.decode(jar.encode("the-token")) == "the-token"


def test_the_cookie_value_does_not_need_quoting() -> None:
    value = cookie().encode("the-token")

    assert all(c.isalnum() or c in "-_." for c in value)


def test_a_tampered_cookie_decodes_to_none() -> None:
    jar = cookie()
    value = jar.encode("the-token")
    _, _, rest = value.partition(".")
    forged = jar.encode("someone-else").partition(".")[0] + "." + rest

    # Change the signature's first character: unlike its last one, all six of
    # its bits are significant, so the signature really differs.
    signed, _, signature = value.rpartition(".")
    bad_signature = signed + "." + ("A" if signature[0] != "A" else "B") + signature[1:]

    assert jar.decode(forged) is None
    assert jar.decode(bad_signature) is None


def test_a_cookie_signed_with_another_key_decodes_to_none() -> None:
    value = cookie(OTHER_KEY).encode("the-token")

    assert cookie(OLD_KEY).decode(value) is None


def test_an_expired_cookie_decodes_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    jar = cookie(max_age=60)
    value = encoded_at(jar, "the-token", int(time.time()) - 61, monkeypatch)

    assert jar.decode(value) is None


def test_a_cookie_just_inside_max_age_still_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    jar = cookie(max_age=60)
    value = encoded_at(jar, "the-token", int(time.time()) - 30, monkeypatch)

    assert jar.decode(value) == "the-token"


def test_rotation_keeps_cookies_signed_with_the_old_key_valid() -> None:
    before = cookie(OLD_KEY)
    after = cookie(OLD_KEY, NEW_KEY)

    assert after.decode(before.encode("the-token")) == "the-token"


def test_rotation_signs_new_cookies_with_the_new_key() -> None:
    rotated = cookie(OLD_KEY, NEW_KEY)
    value = rotated.encode("the-token")

    assert cookie(OLD_KEY).decode(value) is None
    assert cookie(NEW_KEY).decode(value) == "the-token"


@pytest.mark.parametrize("value", [None, "", "garbage", "a.b.c", "....", "é", "x" * 5000])
def test_garbage_or_empty_decodes_to_none(value: str | None) -> None:
    assert cookie().decode(value) is None


def test_a_signed_non_string_payload_decodes_to_none() -> None:
    jar = cookie()
    value = jar._serializer.dumps({"not": "a token"})

    assert jar.decode(value) is None


def test_at_least_one_key_is_required() -> None:
    with pytest.raises(ValueError):
        SessionCookie((), max_age=MAX_AGE, secure=False)


def test_cookie_attributes_are_http_only_and_lax() -> None:
    attributes = SessionCookie((OLD_KEY,), max_age=MAX_AGE, secure=True).attributes()

    assert attributes == {"httponly": True, "samesite": "Lax", "secure": True, "max_age": MAX_AGE, "path": "/"}


def test_over_https_the_cookies_take_the_host_prefix() -> None:
    secure = SessionCookie((OLD_KEY,), max_age=MAX_AGE, secure=True)
    plain = SessionCookie((OLD_KEY,), max_age=MAX_AGE, secure=False)

    assert (secure.name, secure.xsrf_name) == ("__Host-chat_session", "__Host-_xsrf")
    assert (secure.name, secure.xsrf_name) == (SECURE_COOKIE_NAME, SECURE_XSRF_COOKIE_NAME)
    assert (plain.name, plain.xsrf_name) == (COOKIE_NAME, XSRF_COOKIE_NAME) == ("chat_session", "_xsrf")


@pytest.mark.parametrize("secure", [True, False])
def test_both_cookies_meet_the_host_prefix_rules_path_root_and_no_domain(secure: bool) -> None:
    jar = SessionCookie((OLD_KEY,), max_age=MAX_AGE, secure=secure)

    for attributes in (dict(jar.attributes()), dict(jar.xsrf_attributes())):
        assert attributes["path"] == "/" and "domain" not in attributes
        assert attributes["secure"] is secure and attributes["httponly"] is True
        assert attributes["samesite"] == "Lax"
