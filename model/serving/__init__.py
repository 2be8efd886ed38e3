"""Serving: the generator (continuous batching), its decode step, slots, sampling, UTF-8 and phrase masks."""
