"""Progress bars for the long loops: a widget in notebooks, text in a terminal, none when asked.

PADIM_PROGRESS=0 turns every bar off (the course build does, so rendered pages show no stale bars).
"""

from __future__ import annotations

from tqdm.auto import tqdm

from .config import env_flag


def progress_bar(iterable, desc: str, enabled: bool | None = True, **kwargs):
    """`tqdm.auto.tqdm(iterable)`; `enabled=None` shows the bar only on a terminal or in a notebook."""
    disable = True if not env_flag("PADIM_PROGRESS", True) else (None if enabled is None else not enabled)
    return tqdm(iterable, desc=desc, disable=disable, **kwargs)
