"""Allow ``python -m evalkit`` and ``torchrun -m evalkit``."""

from evalkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
