"""What every benchmark script does with its report: print it, and keep it in ``--out`` when given."""

from __future__ import annotations


def emit(text: str, out: str | None) -> None:
    """Print ``text`` to stdout and, if ``out`` names a file, write it there too (UTF-8)."""
    print(text, end="")
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
