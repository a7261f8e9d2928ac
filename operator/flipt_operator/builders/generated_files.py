"""Files generated from the models (CRDs, reference pages): write them, or list the stale ones."""

from __future__ import annotations

from pathlib import Path


def write_or_check(outs: list[Path], files: dict[str, str], *, check: bool) -> list[str]:
    """Write every file into every directory of `outs`; with `check`, only return the paths
    whose content differs (or that are missing)."""
    stale = []
    for name, text in files.items():
        for out in outs:
            path = out / name
            if check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return stale
