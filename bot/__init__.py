"""Mechuri's bot: settings, the history store, the conversation service and its front ends (Telegram, terminal).

Kept empty of imports on purpose: `mechuri --help` imports `bot.cli`, which must stay fast.
"""
