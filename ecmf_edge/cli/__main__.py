"""``python -m ecmf_edge.cli``: the same as the ``ecmf-edge`` command."""
import sys

from ecmf_edge.cli import main

sys.exit(main())
