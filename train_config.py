"""Re-export of :mod:`osf.train_config` for scripts and notebooks run from the repository root.

The named recipes and per-size settings (typed overrides of the method configurations) live in the
package, so an installed ``osf`` adds no top-level ``train_config`` module; code inside ``osf/``
imports ``osf.train_config``. ``import train_config`` here gives the very same module object.
"""

import sys

from osf import train_config as _train_config

sys.modules[__name__] = _train_config
