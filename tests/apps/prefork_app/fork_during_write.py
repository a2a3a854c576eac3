"""Launcher: ``python fork_during_write.py`` runs :func:`forkapp.race.main` (see there)."""
from forkapp.race import main

if __name__ == "__main__":
    main()
