"""Settings: environment over the settings file over defaults; bad values named at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from winback.settings import Settings


def test_settings_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "winback.toml"
    settings_file.write_text(
        'store_name = "Tea Shop"\nstore_timezone = "Europe/Berlin"\nstore_currency = "eur"\n'
    )
    monkeypatch.setenv("WINBACK_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("WINBACK_STORE_NAME", "Tea & Co")
    settings = Settings()
    profile = settings.store_profile()
    assert (profile.name, profile.timezone, profile.currency) == ("Tea & Co", "Europe/Berlin", "EUR")


def test_missing_settings_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINBACK_SETTINGS_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        Settings()


def test_unknown_timezone_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINBACK_STORE_TIMEZONE", "Europe/Atlantis")
    with pytest.raises(ValidationError, match="WINBACK_STORE_TIMEZONE"):
        Settings()


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("quiet_hours_window", "8-21", "WINBACK_QUIET_HOURS_WINDOW"),
        ("quiet_hours_overrides", {"US-TX": "09:00-25:00"}, "WINBACK_QUIET_HOURS_OVERRIDES"),
        ("frequency_caps", {"sms": "one a day"}, "WINBACK_FREQUENCY_CAPS"),
        ("send_rates", {"twilio": float("nan")}, "WINBACK_SEND_RATES"),
    ],
)
def test_messaging_policies_are_checked_at_start(field: str, value: object, named: str) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(**{field: value})
    assert named in str(error.value)
