"""The training layer's one user-facing exception type."""


class TrainingError(Exception):
    """A problem the user can fix: bad data layout, bad config value, missing file.

    The message names the problem and the fix in one line. The CLI prints it without a
    traceback and exits with code 2; anything else is a bug and exits with code 1.
    """
