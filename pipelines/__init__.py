"""The Ray layer: each module is a `ray job submit` entrypoint and an `armor` subcommand.

Importing this package imports no Ray; stages import it when they run.
"""
