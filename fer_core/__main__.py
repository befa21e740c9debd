"""``python -m fer_core ...``: see fer_core.cli."""
from fer_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
