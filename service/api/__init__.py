"""REST routes: thin layers over the domain services."""
