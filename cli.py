"""Thin entry point so `python cli.py train ...` works from a checkout (same as the `tfrobust` script)."""

from tfrobust.cli import main

if __name__ == "__main__":
    main()
