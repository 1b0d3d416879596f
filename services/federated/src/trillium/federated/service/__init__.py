"""The federated gRPC service (`trillium.federated.v1.Coordinator`)."""
