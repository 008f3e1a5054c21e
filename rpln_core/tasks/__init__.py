"""Task functions: each runs one captured forward pass and returns the task result with its trace."""
