"""``python -m doveadm_py`` runs dvadm."""

import sys

from .app import console_main

sys.exit(console_main())
