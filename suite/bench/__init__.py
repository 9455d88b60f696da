"""`python -m suite bench`: profiles, the stage runner and its resumable state."""
