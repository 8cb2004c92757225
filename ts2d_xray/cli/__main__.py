"""``python -m ts2d_xray.cli``: the ``ts2d-xray`` command (e.g. under ``torchrun ... -m ts2d_xray.cli train``)."""

import sys

from ts2d_xray.cli.main import main

sys.exit(main())
