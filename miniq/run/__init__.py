"""Running jobs: the processor, its worker processes and their supervisor,
promotion of due and released jobs, and each job's start (gate, scope,
runner) and output."""
