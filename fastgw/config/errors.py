"""The configuration error, carrying nginx's ``in FILE:LINE`` suffix."""


class ConfigError(Exception):
    """A configuration mistake at a known place.

    ``message`` is nginx-worded (``unknown directive "foo"``); ``file`` and
    ``line`` locate it (``line`` may be None for errors of the whole file,
    ``file`` may be ``"command line"`` for ``-g``). ``str()`` gives
    ``MESSAGE in FILE:LINE``, the text ``fastgw -t`` prints after
    ``fastgw: [emerg]``.
    """

    def __init__(self, message, file=None, line=None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self):
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.message} in {self.file}"
        return f"{self.message} in {self.file}:{self.line}"


class ConfigErrors(Exception):
    """Several ConfigError found in one pass; ``errors`` keeps them in file order."""

    def __init__(self, errors):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = list(errors)
