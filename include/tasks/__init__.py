"""Task bodies of the DAGs: each takes plain data, gets its AWS clients from the provider's hooks, calls the logic."""
