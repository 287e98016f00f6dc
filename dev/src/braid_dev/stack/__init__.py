"""The local stack braid is developed and tested on: real servers as local processes.

No container engine runs on the development machines, so the harness starts the same
binaries a cluster runs (kube-apiserver, etcd, controller-manager, scheduler, kwok,
tritonserver, Prometheus) on loopback. Fixtures, the demo and the local runtime share it.
"""
