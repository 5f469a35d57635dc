"""I2TT client: call the I2TT models on a Triton server over gRPC."""
