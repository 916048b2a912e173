"""The words every wing shares: a job, its limits, schedule and result; the
errors and the one face for a user's text; time; and the kernel's primitives
the queue is built on (files written and renamed, processes, inotify, cgroups).
Imports nothing of miniq's outside itself."""
