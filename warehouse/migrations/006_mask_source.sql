-- Where a published region's mask came from: 'proposal' (prefill kept as is), 'corrected'
-- (majority vote of the annotators' fixes, warehouse.curation.consensus) or 'drawn' (a region an
-- annotator drew). Datasets built before this migration keep NULL: they used the proposals.
ALTER TABLE dataset_regions ADD COLUMN mask_source TEXT;
