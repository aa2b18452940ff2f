"""The error type for bad user input: the CLI prints its message as one paragraph, no traceback."""


class UserError(Exception):
    """Bad input (a file, an entry, an argument). The message names what is wrong and where."""


def one_paragraph(message: str) -> str:
    """A message as one paragraph of at most 100 columns (how every command reports an error)."""
    import textwrap

    return textwrap.fill(" ".join(str(message).split()), width=100)
