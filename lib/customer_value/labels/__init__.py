"""Labels from the horizon after a snapshot: what the models learn to predict."""
