"""Fast checks of the core's pure pieces, sharp enough for mutation testing (`make mutate`)."""

from __future__ import annotations
