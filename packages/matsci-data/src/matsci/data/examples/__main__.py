"""Command line: ``python -m matsci.data.examples {emt,spacegroup,bundled} ...``.

Examples
--------
.. code-block:: console

    $ python -m matsci.data.examples emt out/emt.db --num-structures 500 --seed 1
    $ python -m matsci.data.examples spacegroup out/sg.db --spacegroups 225 229 221
    $ python -m matsci.data.examples bundled out/ --overwrite
"""

# ASE is partly annotated; its unannotated functions are fine to call.
# mypy: untyped-calls-exclude=ase

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import ase.db

from matsci.data.examples._emt import EMT_ELEMENTS, STRUCTURE_TYPES, make_emt_dataset
from matsci.data.examples._spacegroup import DEFAULT_SPACEGROUPS, make_spacegroup_dataset
from matsci.data.examples._split_files import write_split_files


def _summary(path: Path, key: str, seconds: float) -> str:
    """One line: rows, elements and counts per value of ``key`` in the database at ``path``."""
    database = ase.db.connect(str(path), type="db")
    elements: set[str] = set()
    labels: Counter[str] = Counter()
    for row in database.select():
        elements.update(row.symbols)
        labels[str(row.key_value_pairs[key])] += 1
    # Shorter first, so that space group numbers come in numeric order.
    ordered = sorted(labels, key=lambda label: (len(label), label))
    per_label = ", ".join(f"{label}: {labels[label]}" for label in ordered)
    return (
        f"wrote {sum(labels.values())} structures to {path} in {seconds:.1f} s; "
        f"elements {' '.join(sorted(elements))}; {key} {per_label}"
    )


def _timed(make: Callable[[], Path], key: str) -> None:
    start = time.perf_counter()
    path = make()
    print(_summary(path, key, time.perf_counter() - start))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m matsci.data.examples",
        description="Generate the example datasets of matsci-data as ASE SQLite databases.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    emt = commands.add_parser(
        "emt", help="rattled, strained fcc/bcc/hcp metals and alloys labelled by ASE's EMT"
    )
    emt.add_argument("path", type=Path, help="database file to write")
    emt.add_argument("--num-structures", type=int, default=300, help="rows to write")
    emt.add_argument("--seed", type=int, default=0, help="random seed")
    emt.add_argument(
        "--elements",
        nargs="+",
        default=list(EMT_ELEMENTS),
        metavar="SYMBOL",
        help="metals to draw from (EMT's: %(default)s)",
    )
    emt.add_argument(
        "--structure-types",
        nargs="+",
        default=list(STRUCTURE_TYPES),
        choices=STRUCTURE_TYPES,
        help="lattices to draw from",
    )
    emt.add_argument(
        "--alloy-probability", type=float, default=0.5, help="fraction of binary alloys"
    )
    emt.add_argument("--overwrite", action="store_true", help="replace an existing file")

    spacegroup = commands.add_parser(
        "spacegroup",
        help="random crystals of given space groups (pyxtal), labelled by spglib; needs "
        "pip install 'matsci-data[examples]'",
    )
    spacegroup.add_argument("path", type=Path, help="database file to write")
    spacegroup.add_argument("--num-structures", type=int, default=300, help="rows to write")
    spacegroup.add_argument("--seed", type=int, default=0, help="random seed")
    spacegroup.add_argument(
        "--spacegroups",
        nargs="+",
        type=int,
        default=list(DEFAULT_SPACEGROUPS),
        metavar="NUMBER",
        help="space group numbers, the classes (default: %(default)s)",
    )
    spacegroup.add_argument(
        "--max-atoms", type=int, default=24, help="largest conventional cell (atoms)"
    )
    spacegroup.add_argument("--overwrite", action="store_true", help="replace an existing file")

    bundled = commands.add_parser(
        "bundled",
        help="regenerate the bundled copies (emt.db, spacegroup.db and the EMT data as "
        "emt-train/val/test.extxyz) into a folder",
    )
    bundled.add_argument("folder", type=Path, help="folder to write the bundled files into")
    bundled.add_argument("--overwrite", action="store_true", help="replace existing files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "emt":
        _timed(
            lambda: make_emt_dataset(
                args.path,
                num_structures=args.num_structures,
                seed=args.seed,
                elements=args.elements,
                structure_types=args.structure_types,
                alloy_probability=args.alloy_probability,
                overwrite=args.overwrite,
            ),
            "structure_type",
        )
    elif args.command == "spacegroup":
        _timed(
            lambda: make_spacegroup_dataset(
                args.path,
                num_structures=args.num_structures,
                spacegroups=args.spacegroups,
                seed=args.seed,
                max_atoms=args.max_atoms,
                overwrite=args.overwrite,
            ),
            "spacegroup",
        )
    else:
        folder: Path = args.folder
        _timed(
            lambda: make_emt_dataset(folder / "emt.db", overwrite=args.overwrite),
            "structure_type",
        )
        _timed(
            lambda: make_spacegroup_dataset(folder / "spacegroup.db", overwrite=args.overwrite),
            "spacegroup",
        )
        written = write_split_files(
            folder / "emt.db", folder, max_train=120, overwrite=args.overwrite
        )
        print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
