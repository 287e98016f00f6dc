"""DIMEE: a multi-exit MiniLM-L6 served on three tiers, samples routed by difficulty pools.

The pure decisions (reward, α grid, pools, costs, the nearest-centroid routers) live in
``braid.policy.dimee`` so the gateway can use them; this package holds what needs torch and
files: the backbone, training (cached), evaluation, export to Triton.
"""
