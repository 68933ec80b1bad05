from __future__ import annotations

import sys

from otelpeers.cli import main

sys.exit(main())
