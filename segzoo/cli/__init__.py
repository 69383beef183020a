"""The `segzoo` command: predict, train, evaluate, export, publish (one module each here).

Every failure is one line `error: ...` on stderr that names the file and the problem, with
no traceback: exit 2 for bad arguments (checked before any model is loaded) and any
SegzooError, 1 when some images or files failed or on an unexpected OSError, 130 on Ctrl-C.
SEGZOO_DEBUG=1 or `segzoo --debug COMMAND ...` shows the traceback of an unexpected OSError
instead. Each command module defines parser() and run(args, argv) -> exit code; run_command
is the one place that parses, runs and maps failures to exit codes.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from segzoo.cli.arguments import describe_os_error, error
from segzoo.errors import SegzooError

COMMANDS = ("predict", "train", "evaluate", "export", "publish")
KERAS_COMMANDS = ("train", "evaluate", "export", "publish")  # they load Keras model folders


def run_command(command: str, argv: list[str], *, debug: bool = False) -> int:
    """Run `segzoo COMMAND ARGV`: check Keras for the commands that need it, parse with the
    command's one-line-error parser, run it, and turn failures into one line and an exit code
    (SegzooError 2, an OSError 1 with its path, Ctrl-C 130; argparse's own exits as they are)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(f"segzoo.cli.{command}")
    try:
        if command in KERAS_COMMANDS:
            from segzoo.runtime.keras import require_keras

            require_keras(f"segzoo {command}")
        args = module.parser().parse_args(argv)
        return module.run(args, argv)
    except SegzooError as err:
        error(str(err))
        return 2
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


def _usage() -> str:
    from segzoo import __version__

    return f"segzoo {__version__}\nusage: segzoo {{{','.join(COMMANDS)}}} ...  (segzoo COMMAND --help)"


def main(argv: list[str] | None = None) -> int:
    """Run `segzoo COMMAND ...`; returns the exit code (0 ok, 1 some failures, 2 bad arguments, 130 Ctrl-C)."""
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
