"""Keep third-party chatter out of the user's console, and in the debug log.

Optional dependencies (SMAClite, pysc2, protobuf, gym) print notices and deprecation
warnings on import or construction that say nothing about whether they work and would
drown our own one-line messages.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet(what: str, log: logging.Logger) -> Iterator[None]:
    """Capture stdout, stderr and warnings inside the block; ``log.debug`` them as ``what``."""
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            yield
    finally:
        if chatter.getvalue():
            log.debug("%s printed: %s", what, chatter.getvalue().strip())
