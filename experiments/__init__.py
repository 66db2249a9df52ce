"""Command-line entry points: ``main`` (one run), ``sweep`` (a config's grid) and ``report``."""
