"""`segzoo publish`: validate a zoo folder (its weights loaded with Keras) and upload it to the
Hugging Face Hub in one commit (segzoo.zoo.publishing), printing the registry entry to pin; with
--bioimageio, its bioimage.io package (segzoo.export.bioimageio, checked by bioimageio.core) goes in the
same commit as <name>.bioimageio.zip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segzoo.cli.arguments import OneLineParser
from segzoo.zoo.publishing import publish, update_registry

DESCRIPTION = "Validate a zoo folder and upload it to the Hugging Face Hub."


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="segzoo publish", description=DESCRIPTION)
    p.add_argument("folder", help="model_cards/<name> folder (exactly what the Hub repo will hold)")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--dry-run", action="store_true", help="validate and list what would be uploaded")
    p.add_argument("--bioimageio", action="store_true",
                   help="also build the folder's bioimage.io package (as `segzoo export FOLDER --format "
                        "bioimageio`, checked with bioimageio.core) and upload it beside the model as "
                        "<name>.bioimageio.zip")
    p.add_argument("--update-registry", action="store_true",
                   help="write the new revision and sha256 values into segzoo/zoo_registry.json")
    return p


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Validate (loading the weights with Keras) and upload, or list with --dry-run; 0 when done."""
    import tempfile

    from segzoo.models.folders import load_model

    with tempfile.TemporaryDirectory(prefix="segzoo-bioimageio-") as tmp:
        package = None
        if args.bioimageio:
            from segzoo.export.bioimageio import export_bioimageio
            from segzoo.zoo.publishing import bioimageio_filename

            package = Path(tmp) / bioimageio_filename(args.folder)
            info = export_bioimageio(args.folder, package)
            print(f"built {package.name} ({info['bytes'] / 1e6:.1f} MB, bioimageio.core test passed)")
        result = publish(args.folder, args.repo_id, private=args.private, revision=args.revision,
                         dry_run=args.dry_run, check_weights=load_model, bioimageio_package=package)
        if args.dry_run:
            print(f"dry run: would upload {len(result['files'])} file(s) from {args.folder} to {args.repo_id}:")
            for name in result["files"]:
                path = package if package is not None and name == package.name else Path(args.folder) / name
                print(f"  {name}  {path.stat().st_size / 1e6:.2f} MB  sha256 {result['files'][name]}")
            return 0
    print(f"commit: {result['commit_url']}\nrevision: {result['revision']}")
    snippet = {"repo_id": result["repo_id"], "revision": result["revision"], "files": result["files"]}
    print("zoo registry entry:\n" + json.dumps(snippet, indent=2))
    if args.update_registry:
        result["folder"] = args.folder
        print(f"updated {update_registry(Path(args.folder).name, result)}")
    return 0
