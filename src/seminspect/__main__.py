"""``python -m seminspect`` is the same as the ``seminspect`` command."""

from seminspect.cli import main

main()
