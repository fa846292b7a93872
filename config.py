"""Re-export of :mod:`osf.config` for scripts and notebooks run from the repository root.

The data facts (channel contract, labels, channel presets, dataset registry) live in the package,
so an installed ``osf`` does not add a top-level ``config`` module; code inside ``osf/`` imports
``osf.config``. ``import config`` here gives the very same module object.
"""

import sys

from osf import config as _config

sys.modules[__name__] = _config
