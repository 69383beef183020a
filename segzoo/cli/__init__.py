"""The `segzoo` command: predict, train, evaluate, export, publish (one module each here).

Every failure is one line `error: ...` on stderr that names the file and the problem, with
no traceback. A SegzooError exits with its class's `exit_code` (segzoo.errors): 2 for bad
arguments (argparse's, checked before any model is loaded, and UsageError), 1 for an input or
model that cannot be used (DataError, ConfigError, ModelError) or a run that could not complete
(RunError); 1 also when some images or files failed or on an unexpected OSError; 130 on Ctrl-C.
An error whose `argument` is an option of the command gets its flag added to the message.
SEGZOO_DEBUG=1 or `segzoo --debug COMMAND ...` shows the traceback of an unexpected OSError
instead. Each command module defines DESCRIPTION (one line, its parser's description),
parser() and run(args, argv) -> exit code; run_command is the one place that parses, runs and
maps failures to exit codes.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from segzoo.cli.arguments import describe_os_error, error, error_message
from segzoo.errors import SegzooError

COMMANDS = ("predict", "train", "evaluate", "export", "publish")
KERAS_COMMANDS = ("train", "evaluate", "export", "publish")  # they load Keras model folders (see run_command)
EXIT_CODES = (
    (0, "done"),
    (1, "some inputs or models failed, or a run could not complete (DataError, ConfigError, ModelError, RunError)"),
    (2, "usage: bad arguments or options (UsageError)"),
    (130, "interrupted (Ctrl-C)"),
)


def run_command(command: str, argv: list[str], *, debug: bool = False) -> int:
    """Run `segzoo COMMAND ARGV`: parse with the command's one-line-error parser, check Keras for
    the commands that need it (KERAS_COMMANDS, or a module's needs_keras(args) where only some
    options do), run it, and turn failures into one line and an exit code
    (a SegzooError its class's exit_code, with the flag of its `argument` when the command has
    one; an OSError 1 with its path; Ctrl-C 130; argparse's own exits as they are)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(f"segzoo.cli.{command}")
    parser = None
    try:
        parser = module.parser()  # imports nothing heavy (no Keras), so --help works on the base install
        args = parser.parse_args(argv)
        if command in KERAS_COMMANDS and getattr(module, "needs_keras", lambda args: True)(args):
            from segzoo.runtime.keras import require_keras

            require_keras(f"segzoo {command}")
        return module.run(args, argv)
    except SegzooError as err:
        error(error_message(err, parser))
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise
    except OSError as err:
        if debug:
            raise
        error(describe_os_error(err))
        return 1


def description(command: str) -> str:
    """One line saying what `command` does: its module's DESCRIPTION (else its parser's
    description), up to the end of the first sentence."""
    module = importlib.import_module(f"segzoo.cli.{command}")
    text = getattr(module, "DESCRIPTION", None) or module.parser().description or ""
    first = " ".join(text.split()).split(". ")[0]
    return first if first.endswith(".") else first + "."


def _usage() -> str:
    from segzoo import __version__

    width = max(map(len, COMMANDS))
    lines = [f"segzoo {__version__}",
             f"usage: segzoo [--debug] {{{','.join(COMMANDS)}}} ...  (segzoo COMMAND --help: its options)",
             "", "commands:"]
    lines += [f"  {command:<{width}}  {description(command)}" for command in COMMANDS]
    lines += ["", "exit codes:"]
    lines += [f"  {code:<3}  {meaning}" for code, meaning in EXIT_CODES]
    lines += ["", "--debug (or SEGZOO_DEBUG=1): show the traceback of an unexpected OSError."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `segzoo COMMAND ...`; returns the exit code (EXIT_CODES: 0 ok, 1 some inputs or models failed,
    2 bad arguments, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEGZOO_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        hint = f"; to predict it: segzoo predict {argv[0]} --out FOLDER" if os.path.exists(argv[0]) else ""
        error(f"unknown command {argv[0]!r}; valid commands: {', '.join(COMMANDS)}{hint}")
        return 2
    return run_command(argv[0], argv[1:], debug=debug)
