"""Settings from the environment or `.env`: `TELEGRAM_BOT_TOKEN`, and everything else prefixed `MECHURI_`.

`load_settings()` is the one entry point: it turns pydantic's validation errors into one line per problem that names
the environment variable and how to set it. The bot token is a SecretStr, so it never shows in repr or logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "MECHURI_"
TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
# KoAlpaca-Polyglot reads 2,048 tokens; a prompt needs room for at least the template and a short question.
POLYGLOT_CONTEXT = 2048
MIN_PROMPT_TOKENS = 64


class SettingsError(Exception):
    """Settings are missing or invalid. `problems` holds one line per problem; str() joins them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _parse_ids(value: Any) -> Any:
    # Environment variables hold "1,2, 3"; NoDecode keeps pydantic-settings from reading them as JSON first.
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        return [p for p in parts if p]
    if isinstance(value, int):
        return [value]
    return value


IdList = Annotated[list[int], NoDecode]


def parse_logins(text: str) -> list[tuple[str, str]]:
    """"user:password,user2:password2" → pairs; ValueError (naming no password) for a malformed entry."""
    logins = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError("each login is user:password, separated by commas")
        logins.append((user.strip(), password))
    return logins


WEBHOOK_PATH = re.compile(r"/[A-Za-z0-9/_-]*")
WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class WebhookConfig:
    url: str  # what Telegram POSTs to (public, usually a reverse proxy)
    listen: str
    port: int
    path: str
    secret: str = field(repr=False)
    max_connections: int = 40


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampling settings for every generation the bot starts (the seed is drawn per generation)."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float = 1.1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    # Only `mechuri bot` needs the token; `require_token()` checks it there.
    telegram_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(TOKEN_ENV, f"{ENV_PREFIX}TELEGRAM_BOT_TOKEN")
    )
    database_url: str = "sqlite+aiosqlite:///mechuri.db"
    telegram_base_url: str | None = None
    telegram_base_file_url: str | None = None
    admin_ids: IdList = Field(default_factory=list)
    allowed_ids: IdList = Field(default_factory=list)  # empty: everyone may talk to the bot

    model_base: str = "beomi/KoAlpaca-Polyglot-5.8B"
    adapters_dir: Path = Path("adapters")
    adapter: str | None = None
    # gguf: MODEL_BASE is a `mechuri convert-gguf` folder, served by llama.cpp (the CPU path)
    quantization: Literal["4bit", "8bit", "none", "int8", "int4", "gguf"] = "4bit"

    max_new_tokens: int = Field(default=256, ge=1, le=POLYGLOT_CONTEXT - MIN_PROMPT_TOKENS)
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=64)  # model.types.MAX_TOP_K
    repetition_penalty: float = Field(default=1.1, gt=0.0)

    max_batch_size: int = Field(default=8, ge=1)
    max_queue: int = Field(default=64, ge=1)
    capture_decode: bool | None = None  # CUDA graphs for the decode step; unset: on with CUDA, off on CPU
    # MECHURI_QUANTIZATION=gguf: llama.cpp repacks the weights for its AVX2 kernels (1.3-1.6x faster, measured), at
    # the price of a private copy (+3 GiB at 5.8B q4_0, and twice that while /reload starts a second server).
    llama_repack: bool = True
    # gguf: K/V tokens for all slots together (0: a whole context per slot); 5.8B: 0.46 MB a token in f16. Each slot
    # gets its share (the context prompts are trimmed to), or with llama_kv_unified one pool any request may fill.
    llama_kv_tokens: int = Field(default=4096, ge=0)
    llama_kv_unified: bool = False
    llama_kv_type: Literal["f16", "q8_0"] = "f16"
    # gguf: map the file (its pages then count as resident beside the repacked copy) or read the weights into RAM once
    llama_mmap: bool = False
    # Finished turns' K/V kept for follow-up turns (0: off). 5.8B: about 0.46 MB a token, so 1 GiB ≈ 2,300 tokens.
    prefix_cache_mib: int = Field(default=1024, ge=0)
    user_cooldown_s: float = Field(default=1.0, ge=0.0)
    max_concurrent: int = Field(default=32, ge=1)  # generations in flight across all users
    stream_edit_interval_s: float = Field(default=1.0, ge=1.0)  # Telegram allows about one edit a second per chat
    variety_days: float = Field(default=7.0, ge=0.0)  # a dish recommended this recently is avoided (0: off)
    feedback_buttons: bool = True  # 👍/👎 beside "다른 거" on answers the model wrote (preference data)

    # `mechuri bot --webhook`: Telegram POSTs updates to webhook_url; this process listens behind a reverse proxy.
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8080, ge=1, le=65535)
    webhook_path: str | None = None  # default: the path of webhook_url
    webhook_secret: SecretStr | None = None
    webhook_max_connections: int = Field(default=40, ge=1, le=100)
    # `mechuri web`: logins as "user:password,user2:password2" (required to listen beyond 127.0.0.1), and the login
    # names that see the admin area (adapter reload, status), as admin_ids are Telegram's admins.
    web_auth: SecretStr | None = None
    web_admins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    web_max_queue: int = Field(default=64, ge=1)  # page events waiting at once; more get Gradio's "queue full"
    # Several replicas on one PostgreSQL database (bot/replicas.py).
    replica_name: str | None = None  # default: host:pid
    replica_lease_s: float = Field(default=30.0, ge=0.5)
    user_lock_timeout_s: float = Field(default=120.0, gt=0.0)

    @field_validator("web_admins", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value

    @field_validator("web_auth", mode="after")
    @classmethod
    def _check_logins(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_logins(value.get_secret_value())
        return value

    def web_logins(self) -> list[tuple[str, str]]:
        """MECHURI_WEB_AUTH as (user, password) pairs; [] when unset."""
        return parse_logins(self.web_auth.get_secret_value()) if self.web_auth else []

    @field_validator("admin_ids", "allowed_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        return _parse_ids(value)

    @field_validator("telegram_base_url", "telegram_base_file_url", "adapter", "telegram_bot_token", "webhook_url",
                     "webhook_path", "webhook_secret", "replica_name", "capture_decode", "web_auth", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def generation_defaults(self) -> GenerationDefaults:
        return GenerationDefaults(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
        )

    def require_token(self) -> str:
        """The bot token, or SettingsError naming how to set it."""
        token = self.telegram_bot_token.get_secret_value().strip() if self.telegram_bot_token else ""
        if not token:
            raise SettingsError([f"{TOKEN_ENV} is not set: put it in .env or the environment ({TOKEN_ENV}=123:ABC…)"])
        return token

    def require_webhook(self) -> WebhookConfig:
        """The webhook settings, checked, or SettingsError with one line per problem and its fix."""
        problems = []
        url = (self.webhook_url or "").strip()
        parsed = urlsplit(url)
        if not url:
            problems.append(f"{ENV_PREFIX}WEBHOOK_URL is not set: put the public HTTPS address Telegram should send "
                            f"updates to in .env or the environment, e.g. https://bot.example.com/telegram")
        elif parsed.scheme not in ("https", "http") or not parsed.hostname:
            problems.append(f"{ENV_PREFIX}WEBHOOK_URL is invalid (got {url!r}): give a full https:// address")
        elif parsed.scheme == "http" and not self.telegram_base_url:
            problems.append(f"{ENV_PREFIX}WEBHOOK_URL must start with https:// (got {url!r}): Telegram delivers "
                            f"only to HTTPS; plain http works only with a local Bot API server "
                            f"({ENV_PREFIX}TELEGRAM_BASE_URL)")
        path = self.webhook_path or parsed.path or "/telegram"
        if not WEBHOOK_PATH.fullmatch(path):
            problems.append(f"{ENV_PREFIX}WEBHOOK_PATH is invalid (got {path!r}): a path like /telegram "
                            f"(letters, digits, / _ -)")
        secret = self.webhook_secret.get_secret_value().strip() if self.webhook_secret else ""
        if not secret:
            problems.append(f"{ENV_PREFIX}WEBHOOK_SECRET is not set: Telegram sends it with every update, and "
                            f"requests without it are refused. Make one with: "
                            f"python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        elif not WEBHOOK_SECRET.fullmatch(secret):
            problems.append(f"{ENV_PREFIX}WEBHOOK_SECRET is invalid: 1-256 characters of A-Z, a-z, 0-9, _ and - "
                            f"(Telegram's rule)")
        if problems:
            raise SettingsError(problems)
        return WebhookConfig(url=url, listen=self.webhook_listen, port=self.webhook_port, path=path, secret=secret,
                             max_connections=self.webhook_max_connections)

    def __repr_args__(self) -> Any:
        # The URL may hold the database password; repr (and so any log of the settings) shows it masked.
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                from bot.store.database import mask_url

                value = mask_url(value)
            yield name, value

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admin_ids

    def is_allowed(self, user_id: int) -> bool:
        return not self.allowed_ids or user_id in self.allowed_ids or user_id in self.admin_ids


_HINTS: dict[str, str] = {
    "admin_ids": "comma-separated Telegram user ids, e.g. 123,456",
    "allowed_ids": "comma-separated Telegram user ids, e.g. 123,456 (empty: everyone)",
    "quantization": "one of 4bit, 8bit, none (GPU or CPU), int8, int4 (torch on CPU), gguf (llama.cpp on CPU)",
    "stream_edit_interval_s": "seconds, at least 1",
    "max_new_tokens": f"at most {POLYGLOT_CONTEXT - MIN_PROMPT_TOKENS}: the answer and a minimal prompt "
                      f"({MIN_PROMPT_TOKENS} tokens) must fit the model's {POLYGLOT_CONTEXT}-token context",
    "webhook_port": "a port number, e.g. 8080",
    "replica_lease_s": "seconds, at least 0.5",
    "variety_days": "days, 0 or more (0 turns variety across days off)",
    "feedback_buttons": "true or false (on or off)",
    "llama_kv_type": "f16 or q8_0 (the K/V cache of the gguf path)",
    "web_auth": "logins for the web page, user:password,user2:password2",
    "web_admins": "comma-separated login names of MECHURI_WEB_AUTH, e.g. alice,bob",
}


def check_fits_context(settings: Settings, max_context: int) -> None:
    """Once the model is loaded, its own context decides (a tiny or demo model has less than Polyglot's)."""
    if settings.max_new_tokens + MIN_PROMPT_TOKENS > max_context:
        raise SettingsError([
            f"{env_name('max_new_tokens')} is too large for this model (got {settings.max_new_tokens}): the answer "
            f"and a minimal prompt ({MIN_PROMPT_TOKENS} tokens) must fit its {max_context}-token context; set "
            f"{env_name('max_new_tokens')} to at most {max_context - MIN_PROMPT_TOKENS}"
        ])


SECRET_FIELDS = {"telegram_bot_token", "webhook_secret", "database_url", "web_auth"}


def env_name(field: str) -> str:
    return TOKEN_ENV if field == "telegram_bot_token" else ENV_PREFIX + field.upper()


def _problem_line(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ("?",)
    field = str(loc[0])
    if field == TOKEN_ENV:
        field = "telegram_bot_token"
    name = env_name(field)
    if error.get("type") == "missing":
        return f"{name} is not set: put it in .env or the environment"
    given = error.get("input")
    shown = "" if field in SECRET_FIELDS or isinstance(given, dict) else f" (got {given!r})"
    hint = _HINTS.get(field, "")
    fix = f"set {name} in .env or the environment" + (f" to {hint}" if hint else "")
    return f"{name} is invalid{shown}: {error.get('msg', 'invalid value')}; {fix}"


def load_settings(*, require_token: bool = False, env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings; raise SettingsError with one line per problem. Overrides win over the environment."""
    try:
        settings = Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        # One line per setting, even when a list like "a,b" holds several bad items.
        first_per_field: dict[str, Any] = {}
        for error in exc.errors():
            first_per_field.setdefault(str((error.get("loc") or ("?",))[0]), error)
        raise SettingsError([_problem_line(e) for e in first_per_field.values()]) from None
    if require_token:
        settings.require_token()
    return settings
