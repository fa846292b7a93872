"""Training defaults: per SSL method and per backbone size. Entry points read these; flags override."""

from __future__ import annotations
