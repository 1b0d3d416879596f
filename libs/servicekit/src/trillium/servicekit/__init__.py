"""Trillium service kit: gRPC server bootstrap, interceptors, settings, metrics, Redis session store."""
