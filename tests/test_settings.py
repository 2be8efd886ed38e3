"""Settings: defaults, the environment and .env, one clear line per problem, and a token that never shows."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from bot.settings import GenerationDefaults, SettingsError, load_settings

TOKEN = "123456:AAH-very-secret-token"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("MECHURI_") or name == "TELEGRAM_BOT_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env from the repository


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///mechuri.db"
    assert settings.model_base == "beomi/KoAlpaca-Polyglot-5.8B" and settings.quantization == "4bit"
    assert settings.adapters_dir == Path("adapters") and settings.adapter is None
    assert settings.telegram_base_url is None and settings.admin_ids == [] and settings.allowed_ids == []
    assert settings.generation_defaults() == GenerationDefaults(256, 0.7, 0.9, 0, 1.1)
    assert settings.stream_edit_interval_s >= 1
    assert settings.is_allowed(12345) and not settings.is_admin(12345)


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"TELEGRAM_BOT_TOKEN={TOKEN}\nMECHURI_DATABASE_URL=sqlite+aiosqlite:///from-dotenv.db\n"
        "MECHURI_ADMIN_IDS=7, 8\nMECHURI_ADAPTER=\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("MECHURI_ALLOWED_IDS", "100,200")
    monkeypatch.setenv("MECHURI_QUANTIZATION", "none")
    monkeypatch.setenv("MECHURI_TEMPERATURE", "0")
    monkeypatch.setenv("MECHURI_TELEGRAM_BASE_URL", "http://127.0.0.1:8081/bot")
    settings = load_settings(require_token=True)
    assert settings.require_token() == TOKEN
    assert settings.database_url == "sqlite+aiosqlite:///from-dotenv.db"
    assert settings.admin_ids == [7, 8] and settings.allowed_ids == [100, 200] and settings.adapter is None
    assert settings.quantization == "none" and settings.generation_defaults().temperature == 0
    assert settings.telegram_base_url == "http://127.0.0.1:8081/bot"
    assert settings.is_allowed(100) and settings.is_allowed(7) and not settings.is_allowed(300)
    # Command-line overrides win over the environment.
    assert load_settings(database_url="sqlite+aiosqlite:///cli.db").database_url == "sqlite+aiosqlite:///cli.db"


def test_one_clear_line_per_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHURI_QUANTIZATION", "3bit")
    monkeypatch.setenv("MECHURI_ADMIN_IDS", "12,abc,def")
    monkeypatch.setenv("MECHURI_MAX_NEW_TOKENS", "lots")
    monkeypatch.setenv("MECHURI_STREAM_EDIT_INTERVAL_S", "0.2")
    with pytest.raises(SettingsError) as error:
        load_settings()
    problems = error.value.problems
    assert len(problems) == 4 and str(error.value).count("\n") == 3
    by_name = {p.split()[0]: p for p in problems}
    assert set(by_name) == {"MECHURI_QUANTIZATION", "MECHURI_ADMIN_IDS", "MECHURI_MAX_NEW_TOKENS",
                            "MECHURI_STREAM_EDIT_INTERVAL_S"}
    assert "4bit, 8bit, none" in by_name["MECHURI_QUANTIZATION"]
    assert "comma-separated" in by_name["MECHURI_ADMIN_IDS"] and "'abc'" in by_name["MECHURI_ADMIN_IDS"]
    assert all("in .env or the environment" in p for p in problems)


def test_missing_token_names_the_variable() -> None:
    settings = load_settings()  # the terminal front end needs no token
    with pytest.raises(SettingsError) as error:
        settings.require_token()
    assert str(error.value).startswith("TELEGRAM_BOT_TOKEN is not set: put it in .env or the environment")
    with pytest.raises(SettingsError):
        load_settings(require_token=True)


def test_the_token_never_shows(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("MECHURI_TOP_P", "2")  # an error elsewhere must not echo the token either
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert TOKEN not in str(error.value)
    monkeypatch.delenv("MECHURI_TOP_P")
    settings = load_settings()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s / %r / %s", settings, settings, settings.model_dump())
    shown = caplog.text + repr(settings) + str(settings) + settings.model_dump_json()
    assert TOKEN not in shown and settings.require_token() == TOKEN


def test_a_token_that_does_not_validate_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(telegram_bot_token=["not", TOKEN])
    assert "TELEGRAM_BOT_TOKEN is invalid" in str(error.value) and TOKEN not in str(error.value)


def test_an_answer_budget_that_leaves_no_room_for_a_prompt_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings import check_fits_context

    monkeypatch.setenv("MECHURI_MAX_NEW_TOKENS", "2040")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert error.value.problems[0].startswith("MECHURI_MAX_NEW_TOKENS is invalid (got '2040')")
    assert "at most 1984" in str(error.value) and "2048-token context" in str(error.value)
    monkeypatch.setenv("MECHURI_MAX_NEW_TOKENS", "1000")
    settings = load_settings()
    check_fits_context(settings, 2048)  # fine for Polyglot…
    with pytest.raises(SettingsError, match=r"too large for this model \(got 1000\).*at most 960"):
        check_fits_context(settings, 1024)  # …not for a model with half the context


def test_webhook_settings_are_checked_with_a_fix_for_each_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env_file=None).require_webhook()
    problems = error.value.problems
    assert [p.split()[0] for p in problems] == ["MECHURI_WEBHOOK_URL", "MECHURI_WEBHOOK_SECRET"]
    assert "secrets.token_urlsafe" in problems[1]
    with pytest.raises(SettingsError) as error:
        load_settings(env_file=None, webhook_url="http://bot.example.com/tg", webhook_secret="bad secret!",
                      webhook_path="/tg/<x>").require_webhook()
    assert len(error.value.problems) == 3 and "must start with https://" in error.value.problems[0]
    assert "bad secret!" not in str(error.value)
    monkeypatch.setenv("MECHURI_WEBHOOK_URL", "https://bot.example.com/hook")
    monkeypatch.setenv("MECHURI_WEBHOOK_SECRET", "s3cret_-A")
    monkeypatch.setenv("MECHURI_WEBHOOK_PORT", "8443")
    config = load_settings(env_file=None).require_webhook()
    assert (config.url, config.listen, config.port, config.path) == ("https://bot.example.com/hook", "127.0.0.1",
                                                                      8443, "/hook")  # the path follows the URL
    assert "s3cret" not in repr(config)
    # Plain http only towards a local Bot API server.
    local = load_settings(env_file=None, webhook_url="http://10.0.0.5:8080/tg", webhook_secret="x",
                          telegram_base_url="http://127.0.0.1:8081/bot")
    assert local.require_webhook().path == "/tg"
