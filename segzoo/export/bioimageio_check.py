"""Checking a bioimage.io package with the bioimage.io tools themselves (the optional extra
segzoo[bioimageio]): bioimageio.core's test (the format, the files, the test outputs recomputed through
its own pipeline, several input sizes) or bioimageio.spec's validation. Only segzoo.export and its tests
import bioimageio; loading a package (segzoo.zoo.bioimageio) does not."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from segzoo.errors import MissingDependencyError, ModelError

CHECKS = ("test", "validate", "none")


def check_package(path: str | os.PathLike, check: str = "test") -> str:
    """Check the package at `path` with bioimageio.core's test ('test') or bioimageio.spec's validation
    with its file checks ('validate'; 'none' does nothing); returns the status ('passed', 'valid-format':
    a valid format, 'unchecked'). A test passes only as 'passed' (a failed subtest leaves 'valid-format').
    ModelError with the first failure, MissingDependencyError without segzoo[bioimageio]. It runs in a
    temporary working folder: bioimageio.core unzips TensorFlow weights into ./bioimageio_unzipped_tf_weights."""
    if check == "none":
        return "unchecked"
    source, cwd = str(Path(path).resolve()), os.getcwd()
    try:
        with tempfile.TemporaryDirectory(prefix="segzoo-bioimageio-check-") as tmp:
            os.chdir(tmp)
            try:
                if check == "test":
                    from bioimageio.core import test_model

                    summary = test_model(source)
                else:
                    from bioimageio.spec import load_description

                    summary = load_description(source, perform_io_checks=True).validation_summary
            finally:
                os.chdir(cwd)
    except ImportError as err:
        raise MissingDependencyError(f"checking a bioimage.io package needs bioimageio.core and bioimageio.spec "
                                     f"({err}): pip install 'segzoo[bioimageio]', or pass check='none'",
                                     argument="check") from None
    if summary.status != "passed" and (check == "test" or summary.status != "valid-format"):
        raise ModelError(f"{path}: bioimage.io {check} failed: {failure(summary)}")
    return summary.status


def failure(summary) -> str:
    """The first failed check of a bioimageio ValidationSummary, as one line 'location: message'."""
    for detail in summary.details:
        if detail.status == "failed":
            for error in detail.errors:
                return " ".join(f"{'.'.join(map(str, error.loc)) or detail.name}: {error.msg}".split())
            return detail.name
    return f"status {summary.status}"
