"""Who a user is, across front ends. `users.id` (bot/store/schema.py) is one BigInteger key space shared by:

- Telegram users: Telegram's user ids, always positive;
- the terminal's local user: 0;
- web browsers (`mechuri web`): negative ids derived from the browser's random key, so they never meet a Telegram id.

A browser key is a secret the browser keeps (Gradio's BrowserState): the id is a hash of it, so knowing an id does
not give the key, and guessing another browser's key is guessing 192 random bits.
"""

from __future__ import annotations

import hashlib
import secrets

WEB_ID_BITS = 62  # the id fits a signed 64-bit BigInteger on PostgreSQL and SQLite alike
WEB_KEY_BYTES = 24


def new_browser_key() -> str:
    return secrets.token_urlsafe(WEB_KEY_BYTES)


def web_user_id(browser_key: str) -> int:
    """The user id of the browser holding `browser_key`: negative, in [-2**62, -1]."""
    if len(browser_key) < 16:
        raise ValueError("a browser key is at least 16 characters (new_browser_key())")
    digest = hashlib.sha256(b"mechuri-web:" + browser_key.encode()).digest()
    return -1 - int.from_bytes(digest[:8], "big") % (1 << WEB_ID_BITS)


def is_web_user(user_id: int) -> bool:
    return user_id < 0
