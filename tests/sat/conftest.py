"""Puts the repository root on ``sys.path`` so ``configs`` and ``experiments`` import under pytest."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
