"""inilora."""
