"""The web front end (`mechuri web`): a Gradio page on the conversation service. The only code that imports Gradio."""
