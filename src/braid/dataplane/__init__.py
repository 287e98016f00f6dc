"""The gateway, the Triton client pool and the path executor."""
