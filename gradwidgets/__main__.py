"""``python -m gradwidgets``: the same as the ``gradwidgets`` command."""

from .dashboard.cli import main

raise SystemExit(main())
