"""What every segzoo command shares: the argparse parser whose usage errors are one line, the
argument types, and the one-line form of an error."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, `error: <prog>: <problem> (see <prog> --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def at_least(minimum: int):
    """argparse type: an integer >= `minimum`, with a message saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_empty(text: str) -> str:
    """argparse type: a non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def describe_os_error(err: OSError) -> str:
    """'<path>: <strerror>' for an OSError (both paths of a rename), else its type and text."""
    if err.strerror and err.filename is not None:
        if err.filename2 is not None:
            return f"{err.filename} -> {err.filename2}: {err.strerror}"
        return f"{err.filename}: {err.strerror}"
    return f"{type(err).__name__}: {err.strerror or err}"


def option_flag(parser: argparse.ArgumentParser, argument: str | None) -> str | None:
    """The command-line flag of `parser` that sets the Python argument `argument` (the option
    whose dest it is; its long form), or None when no option has that dest."""
    for action in parser._actions:
        if argument and action.dest == argument and action.option_strings:
            return max(action.option_strings, key=len)
    return None


def error_message(err: BaseException, parser: argparse.ArgumentParser | None = None) -> str:
    """The one-line message of a SegzooError; when its `argument` is an option of `parser` that
    the message does not name yet, the flag is added: '<message> (on the command line: --mpp)'."""
    message = " ".join(str(err).splitlines())
    flag = option_flag(parser, getattr(err, "argument", None)) if parser is not None else None
    if flag and flag not in message:
        message += f" (on the command line: {flag})"
    return message


def error(message: str) -> None:
    """Print `error: <message>` on stderr."""
    print(f"error: {message}", file=sys.stderr)
