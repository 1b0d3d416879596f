"""The inference gRPC service (`trillium.inference.v1.InferenceService`)."""
