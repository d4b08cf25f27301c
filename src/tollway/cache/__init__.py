"""The response cache: exact (a hash of the whole normalised request) and semantic (the
latest user turn compared by meaning within a hard partition), per tenant."""
