"""What miniq asks of systemd: the D-Bus client, the units it installs, the
wake timers and ``every`` schedules, and the journal (writing and reading)."""
