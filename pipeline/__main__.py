"""``python -m edgeq``: the edgeq command line."""

from edgeq.cli import main

main()
