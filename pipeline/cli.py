"""``weightzoo``: the project's command line, one subcommand per job.

    weightzoo --help                       # the subcommands
    weightzoo index --help                 # one subcommand's options and examples
    weightzoo ingest data/zoo/models --out data/graphs

Each subcommand runs the same ``main(argv)`` as the Ray job entry point ``jobs/<job>.py``
(:mod:`pipeline.commands`; ``serve`` runs :mod:`serve.app`): a local Ray is started when none is running, a cluster's is joined
when ``RAY_ADDRESS`` (or ``--address``) names one.
"""
from __future__ import annotations

import importlib
import re
import sys

#: subcommand -> (module with ``main(argv)``, arguments put before the user's)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "make-zoo": ("pipeline.commands.make_zoo", ()),
    "ingest": ("pipeline.commands.ingest_zoo", ()),
    "train": ("pipeline.commands.train_encoder", ()),
    "index": ("pipeline.commands.embed_zoo", ()),
    "search": ("pipeline.commands.query", ()),
    "duplicates": ("pipeline.commands.query", ("--near-duplicates",)),
    "evaluate": ("pipeline.commands.evaluate", ()),
    "align": ("pipeline.commands.rebasin", ()),
    "train-autoencoder": ("pipeline.commands.train_autoencoder", ()),
    "evaluate-autoencoder": ("pipeline.commands.evaluate_autoencoder", ()),
    "canonicalize": ("pipeline.commands.canonicalize", ()),
    "lineage": ("pipeline.commands.lineage", ()),
    "serve": ("serve.app", ()),
}


def _summary(module: str) -> str:
    """The first clause of the module's docstring (read without importing it: imports are slow)."""
    import ast
    import importlib.util
    from pathlib import Path

    doc = ast.get_docstring(ast.parse(Path(importlib.util.find_spec(module).origin).read_text())) or ""
    return re.split(r"[.:](?:\s|$)", " ".join(doc.split("\n\n")[0].split()))[0]


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [__doc__.strip().split("\n")[0], "", "usage: weightzoo <command> [options]   (weightzoo <command> --help)",
             "", "commands:"]
    for command, (name, fixed) in COMMANDS.items():
        note = f" ({' '.join(fixed)})" if fixed else ""
        lines.append(f"  {command:<{width}}  {_summary(name)}{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit status (0: done; argparse exits 2 on bad arguments). What the
    command's ``main`` returns is for callers of :mod:`pipeline.commands`, not the shell."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"weightzoo: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    name, fixed = COMMANDS[command]
    sys.argv[0] = f"weightzoo {command}"  # argparse's prog, in usage lines and errors
    importlib.import_module(name).main([*fixed, *rest])
    return 0


if __name__ == "__main__":
    main()
