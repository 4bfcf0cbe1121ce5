"""The router's view of a Kubernetes cluster: the operator's model table, EndpointSlices, ready pods, wake-ups."""
