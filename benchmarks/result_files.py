"""How the benchmarks write their results: the JSON record, and its Markdown beside it (same name, ``.md``)."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.runtime.atomic import atomic_write


def write_results(path: Path, record: dict, markdown: str) -> Path:
    """Write ``record`` to ``path`` as JSON and ``markdown`` to ``path`` with ``.md``; the Markdown file's path."""
    with atomic_write(path) as out:
        out.write(json.dumps(record, indent=2, default=str) + "\n")
    table = path.with_suffix(".md")
    with atomic_write(table) as out:
        out.write(markdown)
    return table
