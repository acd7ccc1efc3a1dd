"""The flywheel's core library: domain, settings, teaching, ML and reporting, without Dagster."""
