"""Reading settings from the environment and ``.env``."""

from __future__ import annotations

import stat
from pathlib import Path
from unittest import mock

import pytest

from chat.config import ConfigError, Settings, ensure_dotenv_secret, load_settings, parse_dotenv

SECRET_A = "a" * 32
SECRET_B = "b" * 40


@pytest.fixture
def dotenv(tmp_path: Path) -> Path:
    return tmp_path / ".env"


# -- parse_dotenv ------------------------------------------------------------


def test_parse_dotenv_reads_key_value_lines() -> None:
    assert parse_dotenv("A=1\nB=two words\n") == {"A": "1", "B": "two words"}


def test_parse_dotenv_skips_blank_lines_and_comments() -> None:
    text = "# a comment\n\n   # indented comment\nA=1\n\n"

    assert parse_dotenv(text) == {"A": "1"}


def test_parse_dotenv_accepts_export_prefix() -> None:
    assert parse_dotenv("export A=1\nexport   B=2") == {"A": "1", "B": "2"}


def test_parse_dotenv_strips_matching_quotes() -> None:
    text = 'A="double quoted"\nB=\'single quoted\'\nC=""\nD="mismatched\''

    assert parse_dotenv(text) == {"A": "double quoted", "B": "single quoted", "C": "", "D": "\"mismatched'"}


def test_parse_dotenv_keeps_hashes_inside_quotes() -> None:
    assert parse_dotenv('A="value # not a comment"') == {"A": "value # not a comment"}


def test_parse_dotenv_drops_inline_comments() -> None:
    assert parse_dotenv("A=value # explained here\nB=x#y") == {"A": "value", "B": "x#y"}


def test_parse_dotenv_drops_an_inline_comment_after_a_quoted_value() -> None:
    assert parse_dotenv("A=\"quoted value\"  # note\nB='x' # note") == {"A": "quoted value", "B": "x"}


def test_parse_dotenv_trims_whitespace_around_keys_and_values() -> None:
    assert parse_dotenv("  A  =  spaced  ") == {"A": "spaced"}


def test_parse_dotenv_allows_empty_values() -> None:
    assert parse_dotenv("A=") == {"A": ""}


def test_parse_dotenv_later_lines_win() -> None:
    assert parse_dotenv("A=1\nA=2") == {"A": "2"}


@pytest.mark.parametrize("line", ["JUST_A_KEY", "=value", "NOT VALID=1", "1ABC=2"])
def test_parse_dotenv_rejects_a_malformed_line_with_its_number(line: str) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_dotenv(f"OK=1\n{line}\n")


# -- load_settings -----------------------------------------------------------


def test_load_settings_uses_defaults_when_only_the_secret_is_set(dotenv: Path) -> None:
    settings = load_settings({"CHAT_COOKIE_SECRETS": SECRET_A}, dotenv)

    assert settings.cookie_secrets == (SECRET_A,)
    assert settings.database_url == "sqlite:///data/chat.sqlite3"
    assert settings.broker_url == "memory://"
    assert settings.port == 8888
    assert settings.cookie_secure is False
    assert settings.allowed_origins == ()


def test_load_settings_reads_the_dotenv_file(dotenv: Path) -> None:
    dotenv.write_text(f"CHAT_COOKIE_SECRETS={SECRET_A}\nCHAT_PORT=9000\n")

    settings = load_settings({}, dotenv)

    assert settings.cookie_secrets == (SECRET_A,)
    assert settings.port == 9000


def test_the_environment_wins_over_the_dotenv_file(dotenv: Path) -> None:
    dotenv.write_text(f"CHAT_COOKIE_SECRETS={SECRET_A}\nCHAT_PORT=9000\nCHAT_HOST=0.0.0.0\n")

    settings = load_settings({"CHAT_PORT": "9100", "CHAT_COOKIE_SECRETS": SECRET_B}, dotenv)

    assert settings.port == 9100
    assert settings.cookie_secrets == (SECRET_B,)
    assert settings.host == "0.0.0.0"  # only in .env, so .env supplies it


def test_a_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    settings = load_settings({"CHAT_COOKIE_SECRETS": SECRET_A}, tmp_path / "absent.env")

    assert settings.cookie_secrets == (SECRET_A,)


def test_missing_cookie_secrets_raise_config_error_naming_the_variable(dotenv: Path) -> None:
    with pytest.raises(ConfigError, match="CHAT_COOKIE_SECRETS"):
        load_settings({}, dotenv)


def test_blank_cookie_secrets_count_as_missing(dotenv: Path) -> None:
    with pytest.raises(ConfigError, match="CHAT_COOKIE_SECRETS"):
        load_settings({"CHAT_COOKIE_SECRETS": " , ,"}, dotenv)


def test_a_short_cookie_secret_is_rejected(dotenv: Path) -> None:
    with pytest.raises(ConfigError, match="32 characters"):
        load_settings({"CHAT_COOKIE_SECRETS": f"{SECRET_A},short"}, dotenv)


def test_comma_separated_cookie_secrets_are_all_kept_in_order(dotenv: Path) -> None:
    settings = load_settings({"CHAT_COOKIE_SECRETS": f" {SECRET_A} , {SECRET_B} ,"}, dotenv)

    assert settings.cookie_secrets == (SECRET_A, SECRET_B)


def test_allowed_origins_are_split_and_trailing_slashes_dropped(dotenv: Path) -> None:
    settings = load_settings(
        {
            "CHAT_COOKIE_SECRETS": SECRET_A,
            "CHAT_ALLOWED_ORIGINS": "https://chat.example.org/, http://localhost:8000 ,,",
        },
        dotenv,
    )

    assert settings.allowed_origins == ("https://chat.example.org", "http://localhost:8000")


def test_allowed_origins_are_normalized_for_exact_comparison(dotenv: Path) -> None:
    settings = load_settings(
        {"CHAT_COOKIE_SECRETS": SECRET_A, "CHAT_ALLOWED_ORIGINS": "HTTPS://Chat.Example.ORG:443,http://[::1]:80"},
        dotenv,
    )

    assert settings.allowed_origins == ("https://chat.example.org", "http://[::1]")


@pytest.mark.parametrize(
    "origin", ["chat.example.org", "ftp://chat.example.org", "https://chat.example.org/path", "https://a@b.example"]
)
def test_something_that_is_not_an_origin_is_rejected_naming_the_variable(dotenv: Path, origin: str) -> None:
    with pytest.raises(ConfigError, match="CHAT_ALLOWED_ORIGINS"):
        load_settings({"CHAT_COOKIE_SECRETS": SECRET_A, "CHAT_ALLOWED_ORIGINS": origin}, dotenv)


def test_trusted_proxies_default_to_loopback(dotenv: Path) -> None:
    settings = load_settings({"CHAT_COOKIE_SECRETS": SECRET_A}, dotenv)

    assert [str(n) for n in settings.trusted_proxies] == ["127.0.0.0/8", "::1/128"]


def test_trusted_proxies_are_networks_or_none(dotenv: Path) -> None:
    def proxies(raw: str) -> list[str]:
        settings = load_settings({"CHAT_COOKIE_SECRETS": SECRET_A, "CHAT_TRUSTED_PROXIES": raw}, dotenv)
        return [str(n) for n in settings.trusted_proxies]

    assert proxies("172.28.0.0/16, 10.1.2.3") == ["172.28.0.0/16", "10.1.2.3/32"]
    assert proxies("none") == []
    with pytest.raises(ConfigError, match="CHAT_TRUSTED_PROXIES"):
        proxies("nginx.internal")


def test_numbers_and_booleans_are_parsed(dotenv: Path) -> None:
    settings = load_settings(
        {
            "CHAT_COOKIE_SECRETS": SECRET_A,
            "CHAT_PORT": "0",
            "CHAT_SESSION_MAX_AGE": "60",
            "CHAT_SESSION_RECHECK_SECONDS": "0",
            "CHAT_BCRYPT_ROUNDS": "4",
            "CHAT_LIMIT_SENDS": "3 per minute",
            "CHAT_MAX_SOCKETS_PER_USER": "2",
            "CHAT_COOKIE_SECURE": "yes",
            "CHAT_DEBUG": "off",
        },
        dotenv,
    )

    assert settings.port == 0
    assert settings.session_max_age == 60
    assert settings.session_recheck_seconds == 0
    assert settings.bcrypt_rounds == 4
    assert settings.limit_sends == "3 per minute"
    assert settings.max_sockets_per_user == 2
    assert (settings.cookie_secure, settings.debug) == (True, False)


@pytest.mark.parametrize(
    "name, value",
    [
        ("CHAT_PORT", "eighty"),
        ("CHAT_PORT", "80.5"),
        ("CHAT_SESSION_MAX_AGE", "0"),
        ("CHAT_BCRYPT_ROUNDS", "3"),
        ("CHAT_LIMIT_SENDS", "fast"),
        ("CHAT_LIMIT_LOGIN_FAILURES", "10 per fortnight"),
        ("CHAT_MAX_SOCKETS_PER_IP", "0"),
        ("CHAT_SESSION_IDLE_SECONDS", "0"),
        ("CHAT_SESSION_RECHECK_SECONDS", "-1"),
        ("CHAT_WS_PING_INTERVAL", "0"),
        ("CHAT_WS_PING_INTERVAL", "soon"),
        ("CHAT_WS_PING_TIMEOUT", "-1"),
        ("CHAT_WS_PING_TIMEOUT", "inf"),
        ("CHAT_WS_MAX_BUFFER_BYTES", "4095"),
        ("CHAT_WS_MAX_BUFFER_BYTES", "1.5"),
    ],
)
def test_a_bad_number_is_rejected_naming_the_variable(dotenv: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"CHAT_COOKIE_SECRETS": SECRET_A, name: value}, dotenv)


def test_websocket_settings_default_to_a_25_s_ping_a_20_s_timeout_and_a_1_mib_buffer(dotenv: Path) -> None:
    settings = load_settings({"CHAT_COOKIE_SECRETS": SECRET_A}, dotenv)

    assert settings.ws_ping_interval == 25
    assert settings.ws_ping_timeout == 20
    assert settings.ws_max_buffer_bytes == 1024 * 1024


def test_websocket_settings_are_parsed(dotenv: Path) -> None:
    settings = load_settings(
        {
            "CHAT_COOKIE_SECRETS": SECRET_A,
            "CHAT_WS_PING_INTERVAL": "0.5",
            "CHAT_WS_PING_TIMEOUT": "0",
            "CHAT_WS_MAX_BUFFER_BYTES": "4096",
        },
        dotenv,
    )

    assert settings.ws_ping_interval == 0.5
    assert settings.ws_ping_timeout == 0
    assert settings.ws_max_buffer_bytes == 4096


def test_empty_websocket_settings_mean_the_defaults(dotenv: Path) -> None:
    settings = load_settings(
        {
            "CHAT_COOKIE_SECRETS": SECRET_A,
            "CHAT_WS_PING_INTERVAL": "",
            "CHAT_WS_PING_TIMEOUT": " ",
            "CHAT_WS_MAX_BUFFER_BYTES": "",
        },
        dotenv,
    )

    assert (settings.ws_ping_interval, settings.ws_ping_timeout, settings.ws_max_buffer_bytes) == (25, 20, 1048576)


def test_env_example_documents_the_websocket_settings_with_their_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    values = parse_dotenv(example.read_text())
    defaults = Settings(cookie_secrets=(SECRET_A,))

    assert float(values["CHAT_WS_PING_INTERVAL"]) == defaults.ws_ping_interval
    assert float(values["CHAT_WS_PING_TIMEOUT"]) == defaults.ws_ping_timeout
    assert int(values["CHAT_WS_MAX_BUFFER_BYTES"]) == defaults.ws_max_buffer_bytes == 1024 * 1024


def test_the_ping_settings_reach_tornado_and_the_config_constants_are_the_defaults(dotenv: Path) -> None:
    from chat.app import make_app
    from chat.config import DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT

    defaults = load_settings({"CHAT_COOKIE_SECRETS": SECRET_A}, dotenv)
    assert (defaults.ws_ping_interval, defaults.ws_ping_timeout) == (DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT)

    settings = load_settings(
        {
            "CHAT_COOKIE_SECRETS": SECRET_A,
            "CHAT_WS_PING_INTERVAL": "7",
            "CHAT_WS_PING_TIMEOUT": "3",
        },
        dotenv,
    )
    app = make_app(settings, mock.Mock())

    assert app.settings["websocket_ping_interval"] == 7
    assert app.settings["websocket_ping_timeout"] == 3


@pytest.mark.parametrize("name", ["CHAT_COOKIE_SECURE", "CHAT_DEBUG"])
def test_a_bad_boolean_is_rejected_naming_the_variable(dotenv: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"CHAT_COOKIE_SECRETS": SECRET_A, name: "maybe"}, dotenv)


def test_load_settings_ignores_the_process_environment_when_given_one(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_PORT", "1234")

    settings = load_settings({"CHAT_COOKIE_SECRETS": SECRET_A}, dotenv)

    assert settings.port == 8888


# -- ensure_dotenv_secret ----------------------------------------------------


@pytest.fixture
def no_secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT_COOKIE_SECRETS", raising=False)


@pytest.mark.usefixtures("no_secret_in_environment")
def test_ensure_dotenv_secret_writes_a_usable_secret_once(dotenv: Path) -> None:
    assert ensure_dotenv_secret(dotenv) is True
    first = dotenv.read_text()

    assert ensure_dotenv_secret(dotenv) is False
    assert dotenv.read_text() == first
    secret = parse_dotenv(first)["CHAT_COOKIE_SECRETS"]
    assert len(secret) >= 32
    assert load_settings({}, dotenv).cookie_secrets == (secret,)


@pytest.mark.usefixtures("no_secret_in_environment")
def test_ensure_dotenv_secret_makes_the_file_private(dotenv: Path) -> None:
    ensure_dotenv_secret(dotenv)

    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600


@pytest.mark.usefixtures("no_secret_in_environment")
def test_ensure_dotenv_secret_appends_to_an_existing_file(dotenv: Path) -> None:
    dotenv.write_text("CHAT_PORT=9000")  # no trailing newline
    dotenv.chmod(0o644)

    assert ensure_dotenv_secret(dotenv) is True

    values = parse_dotenv(dotenv.read_text())
    assert values["CHAT_PORT"] == "9000"
    assert len(values["CHAT_COOKIE_SECRETS"]) >= 32
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600


@pytest.mark.usefixtures("no_secret_in_environment")
def test_ensure_dotenv_secret_fills_an_empty_placeholder(dotenv: Path) -> None:
    dotenv.write_text("CHAT_COOKIE_SECRETS=\n")  # as copied from .env.example

    assert ensure_dotenv_secret(dotenv) is True

    assert len(parse_dotenv(dotenv.read_text())["CHAT_COOKIE_SECRETS"]) >= 32


@pytest.mark.usefixtures("no_secret_in_environment")
def test_ensure_dotenv_secret_keeps_an_existing_secret(dotenv: Path) -> None:
    dotenv.write_text(f"CHAT_COOKIE_SECRETS={SECRET_A}\n")

    assert ensure_dotenv_secret(dotenv) is False
    assert dotenv.read_text() == f"CHAT_COOKIE_SECRETS={SECRET_A}\n"


def test_ensure_dotenv_secret_writes_nothing_when_the_environment_has_one(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_COOKIE_SECRETS", SECRET_A)

    assert ensure_dotenv_secret(dotenv) is False
    assert not dotenv.exists()


# -- the settings table --------------------------------------------------------


def test_every_variable_in_the_settings_table_is_documented_in_env_example() -> None:
    from dataclasses import fields

    documented = parse_dotenv((Path(__file__).resolve().parents[2] / ".env.example").read_text())
    variables = [f.metadata["env"] for f in fields(Settings) if "env" in f.metadata]

    assert variables and sorted(variables) == sorted(documented)


def test_every_variable_in_the_settings_table_is_read(dotenv: Path) -> None:
    from dataclasses import fields

    configurable = [f for f in fields(Settings) if "env" in f.metadata]
    # A value each parser accepts that differs from every default.
    raw = {
        "CHAT_COOKIE_SECRETS": SECRET_B,
        "CHAT_DATABASE_URL": "sqlite:///elsewhere.db",
        "CHAT_BROKER_URL": "redis://r",
        "CHAT_HOST": "0.0.0.0",
        "CHAT_PORT": "9999",
        "CHAT_INSTANCE_NAME": "n1",
        "CHAT_COOKIE_SECURE": "true",
        "CHAT_SESSION_MAX_AGE": "61",
        "CHAT_SESSION_RECHECK_SECONDS": "3",
        "CHAT_BCRYPT_ROUNDS": "5",
        "CHAT_SESSION_IDLE_SECONDS": "62",
        "CHAT_BCRYPT_MAX_IN_FLIGHT": "3",
        "CHAT_LIMIT_SENDS": "1 per second",
        "CHAT_LIMIT_SYNCS_PER_SOCKET": "2 per second",
        "CHAT_LIMIT_SYNCS_PER_USER": "3 per second",
        "CHAT_LIMIT_FETCHES": "9 per second",
        "CHAT_LIMIT_TYPING": "10 per second",
        "CHAT_LIMIT_HANDSHAKES": "4 per second",
        "CHAT_LIMIT_ROOM_CREATION": "5 per second",
        "CHAT_LIMIT_ROOM_CHANGES": "11 per second",
        "CHAT_LIMIT_DM_CREATION": "12 per second",
        "CHAT_LIMIT_REGISTRATIONS": "6 per second",
        "CHAT_LIMIT_LOGINS": "7 per second",
        "CHAT_LIMIT_LOGIN_FAILURES": "8 per second",
        "CHAT_MAX_SOCKETS_PER_USER": "3",
        "CHAT_MAX_SOCKETS_PER_IP": "4",
        "CHAT_IPV6_PREFIX_LENGTH": "56",
        "CHAT_MAX_CONNECTIONS_PER_IP": "7",
        "CHAT_HEADER_TIMEOUT_SECONDS": "3",
        "CHAT_RESUME_MAX_MESSAGES": "9",
        "CHAT_HISTORY_FRAME_MAX_BYTES": "20000",
        "CHAT_PRESENCE_TTL_SECONDS": "9",
        "CHAT_PRESENCE_HEARTBEAT_SECONDS": "2",
        "CHAT_CATCHUP_INTERVAL_SECONDS": "4",
        "CHAT_SHUTDOWN_GRACE_SECONDS": "6",
        "CHAT_LOOP_STALL_SECONDS": "0",
        "CHAT_WS_PING_INTERVAL": "11",
        "CHAT_WS_PING_TIMEOUT": "8",
        "CHAT_WS_MAX_BUFFER_BYTES": "8192",
        "CHAT_EVENT_LOOP": "uvloop",
        "CHAT_LOG_FORMAT": "json",
        "CHAT_ALLOWED_ORIGINS": "https://a.example",
        "CHAT_TRUSTED_PROXIES": "10.0.0.0/8",
        "CHAT_DEBUG": "true",
    }
    assert sorted(raw) == sorted(f.metadata["env"] for f in configurable)

    settings = load_settings(raw, dotenv)
    defaults = Settings(cookie_secrets=(SECRET_A,))

    for setting in configurable:
        assert getattr(settings, setting.name) != getattr(defaults, setting.name), setting.metadata["env"]


def test_every_action_a_limit_counts_has_its_rules_in_a_setting() -> None:
    from chat.wire.actions import Action

    rules = Settings(cookie_secrets=(SECRET_A,)).limit_rules()
    assert set(rules) == set(Action)
    assert rules[Action.SEND] == "20 per 10 seconds;100 per minute"
