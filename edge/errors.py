"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input (a path, a file, an option, a configuration key)."""
