"""Run configs: ``get_config(arg)`` files for ``experiments.main`` (see ``base.py`` for the fields)."""
