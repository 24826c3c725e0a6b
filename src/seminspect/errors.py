"""The project's error base: anything derived from it is a user-facing problem with a clear message.

The CLI prints such errors as one line (naming the file and the problem) and exits with status 2;
any other exception is a bug and keeps its traceback.
"""


class SeminspectError(Exception):
    """A problem with the user's input, configuration or environment, described in the message."""
