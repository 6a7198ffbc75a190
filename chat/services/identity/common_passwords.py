"""Passwords too common to accept (NIST SP 800-63B, 3.1.1.2: refuse commonly used and breached values).

The list is the 30,000 most common passwords of public breaches, as the
``zxcvbn`` package ships it (one comma-separated string in its
``frequency_lists.py``); only those long enough to pass the length rule
matter. The file is read as data, not imported: importing the package builds
its whole password-strength estimator, several megabytes this check does not
use.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from .passwords import MIN_PASSWORD_LENGTH


@functools.cache
def _common() -> frozenset[str]:
    spec = importlib.util.find_spec("zxcvbn")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the zxcvbn package (requirements.txt) is not installed")
    source = Path(spec.submodule_search_locations[0], "frequency_lists.py").read_text(encoding="utf-8")
    return frozenset(word for word in _passwords_list(source).split(",") if len(word) >= MIN_PASSWORD_LENGTH)


def _passwords_list(source: str) -> str:
    """The comma-separated string of ``FREQUENCY_LISTS = {"passwords": "...".split(","), ...}``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "passwords":
                    words = value.func.value if isinstance(value, ast.Call) else value  # type: ignore[attr-defined]
                    if isinstance(words, ast.Constant) and isinstance(words.value, str):
                        return words.value
    raise RuntimeError("zxcvbn's frequency_lists.py is not the one expected: no passwords list")


def is_common(password: str) -> bool:
    """Whether ``password`` (ignoring case) is among the most common breached passwords."""
    return password.lower() in _common()


def load() -> None:
    """Read the list now (at start-up, not during someone's registration)."""
    _common()
