"""``python -m onnxpipe ...`` runs the ``onnxpipe`` command."""

import sys

from ._cli import main

sys.exit(main())
