"""The composition layer: the `streamrec` command line and what runs the stages together (demo, benchmarks,
rebuild, lag and dead-letter tools, evaluation). The only package that may import every stage."""
