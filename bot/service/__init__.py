"""The conversation: a turn, "다른 거", votes, per-user ordering and answer drawing. No transport, no SQL."""
