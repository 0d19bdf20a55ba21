"""``python -m pipeline`` runs the ``distilrank`` command line."""
from .cli import main

raise SystemExit(main())
