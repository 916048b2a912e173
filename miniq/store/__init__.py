"""The queue on disk: the root's layout, its configuration and policy (the one
gate every job passes), claims and their ends, records, unique keys, slots,
pauses, and the operations of ``Queue`` on them.  The filesystem is the state."""
