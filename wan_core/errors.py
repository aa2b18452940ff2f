"""The error type for bad user input: the CLI prints its message as one paragraph, no traceback."""


class UserError(Exception):
    """Bad input (a file, an entry, an argument). The message names what is wrong and where."""
