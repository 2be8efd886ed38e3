"""A person's taste: the profile and what it rules out, reading taste statements in Korean, and the taste copy."""
