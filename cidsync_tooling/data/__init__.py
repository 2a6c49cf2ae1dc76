"""Sample entries for the demo and the dev stack."""
