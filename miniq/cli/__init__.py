"""The ``miniq`` command: the click group and its commands, the fast entry
for ``enqueue`` and ``process``, tables, doctor and the man pages."""
