"""The small modules that talk to the outside: Kubernetes, git, SQL, Redis."""
