"""Errors that are the user's to fix: the command line prints their message
as one line (no traceback) and exits non-zero."""


class UserError(Exception):
    """Something in the input, config or files that the user can fix. The
    message says what is wrong and what to do."""

    exit_code = 2
