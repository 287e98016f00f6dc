"""What no braid ServiceAccount may do, checked with ``kubectl auth can-i`` for each account.

Each account's own needs are listed by the tests of its component; this table is the common
floor: no way to grant itself more (RBAC objects, impersonation, tokens), to run code
elsewhere (pods, exec), to read Secrets, or to change the cluster itself.
"""

from __future__ import annotations

ESCALATION_CHECKS: tuple[tuple[str, str], ...] = (
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
    ("create", "serviceaccounts/token"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("delete", "namespaces"),
    ("patch", "nodes"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("*", "*"),
)
"""(verb, resource[/subresource]) pairs every braid account must be refused."""
