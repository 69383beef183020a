"""Exception types: every error segzoo raises on bad input derives from SegzooError."""


class SegzooError(Exception):
    """Base class for segzoo errors that users can act on."""


class ConfigError(SegzooError, ValueError):
    """A config.json (or config dict) is malformed; the message names the field."""


class DataError(SegzooError, ValueError):
    """An image, mask or annotation cannot be used; the message names the file."""


class UnknownNameError(SegzooError, KeyError):
    """An unknown architecture/model name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""
