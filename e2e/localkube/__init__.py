"""localkube: a Kubernetes control plane from Go modules, pods as local processes."""
