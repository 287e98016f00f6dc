"""braid's rig, installed only with the dev tooling.

- ``stack``: the local stack: etcd, kube-apiserver, controller-manager, scheduler, kwok,
  tritonserver and Prometheus as local processes (no container engine needed).
- ``kwok_runtime``, ``local_runtime``, ``chart_test_pods``: what plays the kubelet for pods
  on kwok nodes (Triton servers, the gateway, helm-test Pods as local processes).
- ``synthetic``: small synthetic catalogs and Triton repositories for tests.
- ``reliability``: fault injection, fuzzers and the hostile-resource suite.
- ``demo``: ``braid demo``, the whole story end to end.
"""
