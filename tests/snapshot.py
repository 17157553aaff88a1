"""The state of a folder tree, to show that refused work wrote nothing."""

import pathlib


def snapshot(folder) -> dict:
    """Every path below ``folder`` (and ``folder`` itself): a file maps to its bytes, a folder to None.

    A missing ``folder`` gives ``{}``, so creating it, even empty, shows as a change.
    """
    root = pathlib.Path(folder)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in [root, *sorted(root.rglob("*"))]}
