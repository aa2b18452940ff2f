"""The error type for bad user input: the CLI prints its message as one paragraph, no traceback."""


class UserError(Exception):
    """Bad input (a file, an entry, an argument). The message names what is wrong and where."""


def plain_text(message) -> str:
    """A message without the terminal escape codes that other libraries put in their messages."""
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(message))


def one_paragraph(message: str) -> str:
    """A message as one paragraph of at most 100 columns of plain text (how every command reports an error)."""
    import textwrap

    # paths stay whole (no break at their hyphens), so they can be copied from the message
    return textwrap.fill(" ".join(plain_text(message).split()), width=100, break_on_hyphens=False,
                         break_long_words=False)
