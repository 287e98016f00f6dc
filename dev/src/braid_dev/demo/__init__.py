"""``braid demo``: models, cluster, operator, chart, Triton, gateway and traffic, end to end."""
