"""The bottom layer: small pieces every other package may use and that import nothing of ours."""
