"""`python -m prunus` == the `prunus` console script (torchrun uses this form)."""

from prunus.cli import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
