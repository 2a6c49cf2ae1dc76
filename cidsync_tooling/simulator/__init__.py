"""The DICT simulator: the Bridge contract served from an in-memory DICT, with an admin service for tests."""
