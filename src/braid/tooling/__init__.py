"""Model tooling: split models into blocks, train links and exits, evaluate paths, export."""
