"""The online API: recommendations, similar items, trending, explanations, and the event collector."""
