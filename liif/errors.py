"""One exception type for user-facing problems; the CLI prints it as a single line."""


class LiifError(Exception):
    """A problem with the user's input (file, option, checkpoint), reported in one line."""
