"""activities: thin wrappers of the side effects (the CID store, the Bridge, Pulsar), a class per dependency."""
