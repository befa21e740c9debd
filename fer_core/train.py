"""`python -m fer_core.train`: the training lab's command (fer_core.lab.train), kept at its old name."""
import sys

from fer_core.lab.train import main

if __name__ == "__main__":
    sys.exit(main())
