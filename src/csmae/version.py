"""The csmae version, in a bottom module every floor may import (never the package face)."""

from __future__ import annotations

__version__ = "0.1.0"
