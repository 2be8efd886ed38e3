"""Users' feedback (votes and "다른 거") exported as preference data for TRL."""
