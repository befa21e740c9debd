"""`python -m fer_core.evaluate`: the lab's evaluation report (fer_core.lab.evaluate), kept at its old name."""
import sys

from fer_core.lab.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
