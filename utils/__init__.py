"""What every stage shares: atomic files, checkpoints, logging, process pools."""
