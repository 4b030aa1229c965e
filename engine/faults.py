"""Fault points for bench/fault_injection.py, which proves that a killed run leaves nothing half
written. With the environment variable DUET_FAULT set to a point's name, the process kills
itself with SIGKILL there (no cleanup, no exit handlers: what a power cut or the OOM killer
does). Unset, which is always the case outside that script, a point costs one dict lookup.

Points: "load" (the run id is claimed, no data read yet), "method" (a method is about to
train), "parts" (a torchrun rank has written its Parquet parts, before the others
have), "store" (the store write is half done), "renames" (the weights folder is published,
the database not yet). "<point>@<rank>" fires on that torchrun rank only (a rank that dies
while the others wait for it at a collective).
"""

from __future__ import annotations

import os
import signal

ENV = "DUET_FAULT"


def point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted is None:
        return
    where, _, rank = wanted.partition("@")
    if where == name and (not rank or rank == os.environ.get("RANK", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
