"""Entry point for `python -m dlcvkit`, `accelerate launch -m dlcvkit` and `accelerate launch dlcvkit`."""

import os
import sys

if not __package__:
    # Run as a script (`accelerate launch dlcvkit ...` from the repo root): Python put the package folder
    # itself first on sys.path, where its sub-packages would shadow other modules. Put its parent there instead.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))

from dlcvkit.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
