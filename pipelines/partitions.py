"""Partitions shared across domains. Ingestion batches are dynamic partitions: a sensor or
`sfr ingest` adds one key per batch; every per-batch asset (samples, regions, tasks) uses it."""
import dagster as dg

BATCHES = dg.DynamicPartitionsDefinition(name="batches")
