"""The terminal front end (`mechuri chat`): stdin lines in, answers out, over the same conversation service."""
