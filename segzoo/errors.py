"""Exception types: every error segzoo raises on bad input derives from SegzooError, and every
class lives here. The base class is never raised itself: each error says what kind of fault it
is, and `segzoo` (the CLI) turns the kind into its exit code (`exit_code`):

- UsageError (2): the call is wrong: an invalid argument or combination, an unknown name,
  outputs that exist without overwrite, a work folder of another job without restart;
- DataError (1): an input (image, mask, annotation, slide) cannot be used; the message names the file;
- ConfigError (1): a model's config.json (or config dict) is malformed; the message names the field;
- ModelError (1): a model's files or outputs are wrong (checksum, ONNX metadata, output shape, parity);
- RunError (1): a job could not complete for a reason outside its inputs (a cluster task failed,
  a worker sees other files, an optional dependency is missing).

Ctrl-C is Python's KeyboardInterrupt (exit 130). A message names the *Python* argument that fixes it
(e.g. "pass mpp=..."); `argument` holds that name, so the CLI can add its own flag (`--mpp`).
"""

from __future__ import annotations

from pathlib import Path


class SegzooError(Exception):
    """Base class for segzoo errors that users can act on (never raised itself)."""

    exit_code = 1

    def __init__(self, *args: object, argument: str | None = None):
        super().__init__(*args)
        self.argument = argument  # the Python argument (keyword) that fixes it, when one does


class UsageError(SegzooError, ValueError):
    """The call is wrong: an invalid argument value or combination (the message names the argument
    and the valid values), outputs in the way without overwrite, a work folder of another job."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """An unknown architecture/model/option name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataError(SegzooError, ValueError):
    """An image, mask, annotation or slide cannot be used; the message names the file."""


class ConfigError(SegzooError, ValueError):
    """A config.json (or config dict) is malformed; the message names the field."""


class ModelError(SegzooError):
    """A model's files or outputs are not what segzoo needs; the message names the model or file."""


class ChecksumError(ModelError):
    """A downloaded or bundled file does not match its pinned sha256: `path` (the file, when one
    is known), `expected` and `actual` (hex digests)."""

    def __init__(self, message: str, *, path: Path | None = None, expected: str = "", actual: str = "",
                 argument: str | None = None):
        super().__init__(message, argument=argument)
        self.path, self.expected, self.actual = path, expected, actual


class OnnxModelError(ModelError):
    """An .onnx file is not a segzoo model (missing or malformed metadata, a changed graph)."""


class ModelOutputError(ModelError):
    """The network's output does not fit its input: another size, or not the config's channels."""


class ParityError(ModelError):
    """An exported model's outputs differ from the Keras model's beyond the tolerance."""


class ParityShapeError(ParityError):
    """An exported model's output shape differs from the Keras model's."""


class RunError(SegzooError):
    """A job could not complete for a reason outside its inputs: a cluster task failed, a worker
    loads other model files, an optional dependency is not installed."""


class MissingDependencyError(RunError, ImportError):
    """An optional dependency (an extra such as segzoo[slides] or segzoo[dask]) is not installed;
    the message names the pip command."""


ERROR_CLASSES = (UsageError, UnknownNameError, DataError, ConfigError, ModelError, ChecksumError, OnnxModelError,
                 ModelOutputError, ParityError, ParityShapeError, RunError, MissingDependencyError)
"""Every class segzoo raises (SegzooError itself is never raised)."""
