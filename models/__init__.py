"""V, M and C: the networks, free of any file or process handling."""
