"""One exception type for every problem a user can fix.

The command line catches `PadimError` and prints its message as a single line
(no traceback), so every message must name the file, folder or option at fault.
"""


class PadimError(Exception):
    """A user-facing error: bad input, missing weights, wrong layout, ..."""


class Terminated(KeyboardInterrupt):
    """Raised by the `padim` command's SIGTERM handler: a `kill` is handled like Ctrl-C, so every
    `finally` runs and no temporary file is left behind."""
