"""One flywheel cycle per partition: a reviewer-feedback batch, or a bootstrap cycle."""

import dagster as dg

cycles = dg.DynamicPartitionsDefinition(name="flywheel_cycle")
