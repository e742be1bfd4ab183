"""GhostCrate: a caching crates.io mirror and private Cargo registry appliance."""

__version__ = "0.1.0"
