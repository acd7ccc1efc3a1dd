"""Artifact stores: a local directory (default) or S3, behind one interface."""
