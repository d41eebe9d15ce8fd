"""Offline tools sharing the daemon's code: rig replay, the reference consumer, file conversion,
scan recordings, running the daemon as a child process."""
