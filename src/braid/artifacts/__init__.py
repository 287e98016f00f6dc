"""Artifacts by URI: the fetcher the Triton pods' init container runs (``braid artifacts``).

``fetch`` streams one artifact to disk (timeouts, retries that resume, a size bound, a
sha256 check); ``plan`` assembles a pod's model repository from the operator's plan.
"""
