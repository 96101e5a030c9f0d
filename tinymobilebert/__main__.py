"""``python -m tinymobilebert``: see ``tinymobilebert.cli``."""

from .cli import main

raise SystemExit(main())
