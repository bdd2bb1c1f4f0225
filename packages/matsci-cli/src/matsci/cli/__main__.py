"""``python -m matsci.cli`` runs the ``matsci`` command."""

from matsci.cli import main

if __name__ == "__main__":
    main()
