"""Shared test support: free ports, real-part requirements, child processes."""
