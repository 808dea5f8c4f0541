-- Which ratings an annotator clicked and which came from a recorded default (annotation.config):
-- "everything outside the edit preserved?" = yes fills context/background preserve (5) and
-- verdict (fine); an edit region's verdict defaults from its success and its preserve to 5
-- (unless marked artifact); the whole-image artifacts rating to 5 when no region is marked
-- artifact. Curation can weigh defaults less than clicks.
ALTER TABLE annotations ADD COLUMN outside_preserved BOOLEAN;          -- NULL: not asked (older config)
ALTER TABLE annotations ADD COLUMN artifacts_default BOOLEAN DEFAULT false;
ALTER TABLE annotation_regions ADD COLUMN success_default BOOLEAN DEFAULT false;
ALTER TABLE annotation_regions ADD COLUMN preserve_default BOOLEAN DEFAULT false;
ALTER TABLE annotation_regions ADD COLUMN verdict_default BOOLEAN DEFAULT false;
