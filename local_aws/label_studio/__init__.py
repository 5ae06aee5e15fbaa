"""The local Label Studio (server process) and the simulated workforce that works its tasks through the API."""
