"""The project's one exception type: bad input, reported by the CLI as one line and exit code 2."""


class DlcvkitError(Exception):
    """A problem with the user's input (file, option, recipe) that the message explains."""
