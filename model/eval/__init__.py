"""Evaluation: losses, generation checks, what a reader sees, and preference scores."""
