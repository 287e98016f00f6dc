"""braid: collaborative DNN serving on Kubernetes.

Service providers split frozen DNNs into blocks served by Triton; braid lets requests take
other paths through them (skip- and cross-connections, early exits, tier routing) and moves
traffic between those paths by the CoDE cost function.
"""

__version__ = "0.1.0"
