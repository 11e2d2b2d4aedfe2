"""CircuitLasso: circuits over sparse-autoencoder features learned by sparse linear regression."""
