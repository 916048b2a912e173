"""The system queue's helper: the protocol a user's ``miniq --system`` speaks
(helper.py) and the root server that answers it (server.py)."""
