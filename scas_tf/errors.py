"""The one exception type users see: its message is printed as a single line by the CLI."""


class ScasError(Exception):
    """A problem with the user's input (flags, files, architecture strings, run folders)."""
