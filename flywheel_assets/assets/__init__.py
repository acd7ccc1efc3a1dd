"""The flywheel's assets, one module per step of a cycle."""
