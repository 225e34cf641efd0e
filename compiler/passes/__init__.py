"""Graph-to-graph passes; each file holds one pass, ``pipeline`` lists them in order."""
