"""The offline demo model and the tiny test models: built from scratch on our bundled data."""
