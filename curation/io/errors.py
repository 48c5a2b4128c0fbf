"""The one error type for input the user pointed us at and we cannot use at all."""


class InputError(ValueError):
    """The input cannot be read at all (missing, unreachable, empty, wrong kind, malformed list):
    one line for the user, exit 2. Problems with single items are reject rows, never this."""
