"""Stage 4 and 5 building blocks: the agent (V, M, C) acting in the real env and in the dream."""
