"""The Telegram front end: the only code that imports python-telegram-bot."""
