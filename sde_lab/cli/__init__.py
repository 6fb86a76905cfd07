"""The ``sde-lab`` command line: the only place that parses arguments.

Each subcommand lives in its own module of this package with two functions, ``add_parser(subparsers)``
and ``run(args) -> int``; :data:`COMMANDS` lists them in the order ``--help`` shows.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

# subcommand name → module in sde_lab.cli
COMMANDS: dict[str, str] = {
    "targets": "targets",
    "solvers": "solvers",
    "sample": "sample",
    "train": "train",
    "likelihood": "likelihood",
    "eval": "eval",
    "train-classifier": "train_classifier",
    "export": "export",
    "fid-stats": "fid_stats",
}


class CLIError(Exception):
    """A user error: printed as ``sde-lab: error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sde-lab",
        description="Score-based generative modelling through SDEs: train, sample, likelihood, eval.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"{__name__}.{module}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    threads = torch.get_num_threads()  # a command sets its own (--threads); an in-process caller gets its setting back
    try:
        return int(args._run(args) or 0)
    except (ValueError, CLIError, OSError) as e:
        # an OS error from open()/mkdir() as "Permission denied: PATH"; every other error is its own message
        msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename and e.strerror else str(e)
        print(f"sde-lab {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
