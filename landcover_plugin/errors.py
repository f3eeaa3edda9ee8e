"""The one exception type the plugin shows to users."""


class LandcoverPluginError(Exception):
    """A problem the user can act on; the message says what is wrong and how to fix it.

    ``details`` carries logs (e.g. the worker's stderr) for the log panel, not for the message bar.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details
