"""segzoo.errors: every error class lives there, none is raised as the bare base class, and the
`segzoo` command turns each class into its exit code in one line (with the flag of the option
that fixes it); `segzoo --help` lists the commands and the exit codes. No model is loaded."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
from pathlib import Path

import pytest

import segzoo.runtime.keras
from segzoo import errors
from segzoo.cli import COMMANDS, description, main
from segzoo.cli.arguments import error_message, option_flag
from segzoo.errors import (
    ERROR_CLASSES,
    ChecksumError,
    ConfigError,
    DataError,
    MissingDependencyError,
    ModelError,
    ModelOutputError,
    OnnxModelError,
    ParityError,
    ParityShapeError,
    RunError,
    SegzooError,
    UnknownNameError,
    UsageError,
)

PACKAGE = Path(errors.__file__).parent
EXIT_CODES = {UsageError: 2, UnknownNameError: 2, DataError: 1, ConfigError: 1, ModelError: 1, ChecksumError: 1,
              OnnxModelError: 1, ModelOutputError: 1, ParityError: 1, ParityShapeError: 1, RunError: 1,
              MissingDependencyError: 1}


def _modules():
    """(path relative to the repository, AST) of every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _name(node: ast.expr) -> str | None:
    """`X` for the expressions X and something.X, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


# -- the classes -----------------------------------------------------------------------------------------

def test_no_module_raises_or_builds_the_bare_base_class():
    """SegzooError says nothing about the kind of fault (nor which exit code): every raise picks
    a subclass. Every SegzooError(...) call is reported with its file and line."""
    found = [f"{path}:{node.lineno}" for path, tree in _modules() for node in ast.walk(tree)
             if isinstance(node, ast.Call) and _name(node.func) == "SegzooError"]
    assert found == [], f"SegzooError(...) is built here; raise a subclass from segzoo.errors: {found}"


def test_every_class_is_defined_in_segzoo_errors_and_nowhere_else():
    defined = {obj for _, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, SegzooError) and obj.__module__ == "segzoo.errors"}
    assert set(ERROR_CLASSES) == defined - {SegzooError}
    assert len(ERROR_CLASSES) == len(set(ERROR_CLASSES)) and set(EXIT_CODES) == set(ERROR_CLASSES)
    assert all(issubclass(cls, SegzooError) and cls is not SegzooError for cls in ERROR_CLASSES)
    names = {"SegzooError", *(cls.__name__ for cls in ERROR_CLASSES)}
    elsewhere = [f"{path}:{node.lineno} class {node.name}" for path, tree in _modules()
                 if path.as_posix() != "segzoo/errors.py" for node in ast.walk(tree)
                 if isinstance(node, ast.ClassDef) and any(_name(base) in names for base in node.bases)]
    assert elsewhere == [], f"error classes belong in segzoo/errors.py (one import path): {elsewhere}"


def test_the_classes_keep_their_python_meanings():
    assert issubclass(UsageError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(ConfigError, ValueError) and issubclass(MissingDependencyError, ImportError)
    assert str(UnknownNameError("unknown model 'x'; valid: a, b")) == "unknown model 'x'; valid: a, b"
    with pytest.raises(KeyError):
        raise UnknownNameError("unknown")
    err = ChecksumError("m.onnx: sha256 mismatch", path=Path("m.onnx"), expected="ab", actual="cd",
                        argument="revision")
    assert (err.path, err.expected, err.actual, err.argument) == (Path("m.onnx"), "ab", "cd", "revision")
    assert isinstance(err, ModelError) and UsageError("x").argument is None
    assert DataError("x", argument="mpp").argument == "mpp"


# -- the exit codes --------------------------------------------------------------------------------------

@pytest.fixture
def export_raises(monkeypatch):
    """`segzoo export m --out o.onnx` whose run raises the given exception (Keras check skipped)."""
    module = importlib.import_module("segzoo.cli.export")
    monkeypatch.setattr(segzoo.runtime.keras, "require_keras", lambda what: None)

    def arm(exc: BaseException):
        def run(args, argv):
            raise exc

        monkeypatch.setattr(module, "run", run)
        return main(["export", "m", "--out", "o.onnx"])

    return arm


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_each_class_exits_with_its_code_in_one_line(cls, export_raises, capsys):
    assert cls.exit_code == EXIT_CODES[cls]
    assert export_raises(cls(f"m: a {cls.__name__}")) == EXIT_CODES[cls]
    err = capsys.readouterr().err
    assert err == f"error: m: a {cls.__name__}\n"


def test_ctrl_c_exits_130_in_one_line(export_raises, capsys):
    assert export_raises(KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_message_of_several_lines_is_printed_as_one(export_raises, capsys):
    assert export_raises(DataError("m: first\nsecond")) == 1
    assert capsys.readouterr().err == "error: m: first second\n"


# -- the flag of the Python argument --------------------------------------------------------------------

@pytest.mark.parametrize("argument, suffix", [
    ("overwrite", " (on the command line: --overwrite)"),  # an option of `segzoo export`
    ("opset", " (on the command line: --opset)"),
    ("mpp", ""),  # not an option of this command
    ("model", ""),  # a positional argument: no flag to name
    (None, ""),
])
def test_the_flag_of_the_argument_is_added_when_the_command_has_it(argument, suffix, export_raises, capsys):
    message = "o.onnx: exists; pass overwrite=True to replace it"
    assert export_raises(UsageError(message, argument=argument)) == 2
    assert capsys.readouterr().err == f"error: {message}{suffix}\n"


def test_a_flag_the_message_names_already_is_not_repeated(export_raises, capsys):
    assert export_raises(UsageError("--opset must be >= 7", argument="opset")) == 2
    assert capsys.readouterr().err == "error: --opset must be >= 7\n"


def test_option_flag_takes_the_long_form_from_the_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("-a", "--architecture")
    parser.add_argument("--tile", dest="tile_size")
    parser.add_argument("inputs", nargs="*")
    assert option_flag(parser, "architecture") == "--architecture"
    assert option_flag(parser, "tile_size") == "--tile" and option_flag(parser, "tile") is None
    assert option_flag(parser, "inputs") is None and option_flag(parser, None) is None
    assert error_message(ModelError("x", argument="tile_size"), parser) == "x (on the command line: --tile)"
    assert error_message(ModelError("x", argument="tile_size")) == "x"  # no parser: the Python message


# -- segzoo --help ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_lists_every_command_with_what_it_does_and_the_exit_codes(argv, capsys):
    from segzoo import __version__

    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"segzoo {__version__}" and lines[1].startswith("usage: segzoo ")
    for command in COMMANDS:
        text = description(command)
        assert text and "\n" not in text
        assert any(line.split()[:1] == [command] and line.strip().endswith(text) for line in lines), command
    for code in (0, 1, 2, 130):
        assert any(line.split()[:1] == [str(code)] for line in lines), code
    assert "UsageError" in out and "DataError" in out


def test_a_commands_description_is_its_parsers():
    """One place: a command module's DESCRIPTION opens its parser's description (train's parser
    imports Keras, so it is left out here)."""
    for command in COMMANDS:
        module = importlib.import_module(f"segzoo.cli.{command}")
        text = getattr(module, "DESCRIPTION", None)
        assert text, f"segzoo.cli.{command} has no DESCRIPTION"
        if command != "train":
            assert module.parser().description.startswith(text), command
        if text is not None:
            assert text.startswith(description(command).rstrip("."))
