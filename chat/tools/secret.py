"""Print a new cookie secret, or with ``--ensure FILE`` add one to a .env file if it has none.

``make run`` calls ``--ensure .env`` so a bare machine gets a private key that
survives restarts; rotate by prepending the old key list to a new one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ensure_dotenv_secret, generate_secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.tools.secret", description=__doc__)
    parser.add_argument("--ensure", metavar="FILE", type=Path, help="append CHAT_COOKIE_SECRETS to FILE unless set")
    args = parser.parse_args(argv)
    if args.ensure is None:
        print(generate_secret())
    elif ensure_dotenv_secret(args.ensure):
        print(f"wrote a new CHAT_COOKIE_SECRETS to {args.ensure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
