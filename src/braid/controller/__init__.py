"""The path controller: Prometheus metrics in, path decisions out (``braid controller run``)."""
