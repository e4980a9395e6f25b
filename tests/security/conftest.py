"""The fuzz / hostile-input suite: puts ``corpus.py`` (file builders) on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
