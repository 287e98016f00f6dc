"""Pure functions: specs in, Kubernetes objects and Triton configs out. No I/O."""
