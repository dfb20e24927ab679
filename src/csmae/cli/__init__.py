"""The ``csmae`` command. Each subcommand lives in its own module ``csmae.cli.<name>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; modules stay light (heavy imports inside run).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: subcommand -> (module, one-line help). Order is the order shown in ``csmae --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("csmae.cli.demo", "run the whole system on a synthetic + real archive and write a report"),
    "synth": ("csmae.cli.synth", "write a synthetic paired S1/S2 archive"),
    "subset": ("csmae.cli.subset", "build a reproducible list of patch names (BEN-14K, BEN-270K, filters)"),
    "prepare": ("csmae.cli.prepare", "convert any BigEarthNet source into the fast prepared store"),
    "tile": ("csmae.cli.tile", "cut your own georeferenced S1/S2 scenes into a prepared store"),
    "info": ("csmae.cli.info", "describe a dataset source, store, model, embeddings or index"),
    "fit": ("csmae.cli.fit", "train a model from a YAML config"),
    "import-reference": ("csmae.cli.import_reference", "import a reference CSMAE checkpoint"),
    "embed": ("csmae.cli.embed", "compute descriptors of an archive"),
    "index": ("csmae.cli.index", "build a search index over descriptors"),
    "ingest": ("csmae.cli.ingest", "tile, embed and add new scenes to an index (resumable, idempotent)"),
    "search": ("csmae.cli.search", "search an index by archive id or image files"),
    "timeline": ("csmae.cli.timeline", "a place's acquisitions in time order, with descriptor distances"),
    "changes": ("csmae.cli.changes", "rank places by how much they changed between two periods"),
    "export": ("csmae.cli.export", "write an area's items, footprints and descriptors as GeoParquet"),
    "evaluate": ("csmae.cli.evaluate", "evaluate retrieval in every direction"),
    "serve": ("csmae.cli.serve", "serve the search page and HTTP API"),
    "verify": ("csmae.cli.verify", "check an artefact's files against their recorded checksums"),
}


def build_parser() -> argparse.ArgumentParser:
    from csmae.version import __version__

    parser = argparse.ArgumentParser(
        prog="csmae",
        description="Cross-Sensor Masked Autoencoders for sensor-agnostic remote-sensing image retrieval.",
    )
    parser.add_argument("--version", action="version", version=f"csmae {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # not built yet
        p = sub.add_parser(name, help=help_text, description=module.__doc__ or help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from csmae.cli.openmp import calm_openmp_when_busy

    calmed = calm_openmp_when_busy()  # before torch loads OpenMP
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if calmed:
        logging.getLogger("csmae.cli").info("%s", calmed)
    from csmae.errors import RedactingFilter, redact_uri

    for handler in logging.getLogger().handlers:  # no password of a URI in any log line
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, LookupError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, LookupError) and e.args else e
        print(f"csmae {args.command}: error: {redact_uri(msg)}", file=sys.stderr)
        return 1
