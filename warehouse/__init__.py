"""The warehouse: one workspace directory holding a DuckDB file, a content-addressed image
store and everything else an installation owns; ingestion of editing samples; curation and
versioned datasets.

Public entry points: `warehouse.workspace.Workspace`, `warehouse.db.Warehouse`,
`warehouse.imagestore.LocalImageStore`, `warehouse.ingest.ingest_path`, `warehouse.masks`.
"""
