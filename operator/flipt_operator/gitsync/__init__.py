"""The git-sync sidecar: keeps each git storage's repository in step with its remote."""
