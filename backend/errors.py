"""The backend's one user-facing exception type."""


class LandcoverError(Exception):
    """A problem the user can fix: bad input, missing model, wrong option.

    The message names the problem and the fix in one line. The CLI prints it without a
    traceback and exits with code 2; anything else is a bug and exits with code 1.
    """
