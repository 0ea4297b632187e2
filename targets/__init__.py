"""Edge targets, one TOML file each. Adding a target is adding a file here."""
