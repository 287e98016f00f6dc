"""``python -m braid.cli``: the same command as ``braid`` (the harness starts it this way so a
checkout's sources run, whichever checkout the venv's console script points at)."""

from braid.cli import app

app(prog_name="braid")
