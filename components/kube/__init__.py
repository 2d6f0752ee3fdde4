"""The Kubernetes layer: RuntimeClass, sandboxed samples, in-cluster proof, optional k3s."""
