"""The ``nopeek`` command line."""
