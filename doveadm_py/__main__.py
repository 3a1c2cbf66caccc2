"""``python -m doveadm_py`` runs dvadm."""

import sys

from .app import main

sys.exit(main())
