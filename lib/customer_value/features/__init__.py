"""Point-in-time customer features: everything as of a snapshot date S, from data strictly before S."""
