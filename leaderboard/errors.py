"""Errors whose message is the whole story for the user: the CLI prints them as one line."""


class UserError(Exception):
    """Bad input or an unmet precondition the user can fix; the CLI exits 2 with the message."""
