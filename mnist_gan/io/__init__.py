"""Files: atomic writes, locks, staged directory swaps, bounded readers of untrusted files and their headers."""
