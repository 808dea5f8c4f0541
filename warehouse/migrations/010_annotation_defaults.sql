-- Which ratings an annotator clicked and which came from a recorded default (annotation.config):
-- "everything outside the edit preserved?" = yes fills context/background preserve (5) and
-- verdict (fine); an edit region's verdict defaults from its success. Curation can weigh
-- defaults less than clicks.
ALTER TABLE annotations ADD COLUMN outside_preserved BOOLEAN;          -- NULL: not asked (older config)
ALTER TABLE annotation_regions ADD COLUMN success_default BOOLEAN DEFAULT false;
ALTER TABLE annotation_regions ADD COLUMN preserve_default BOOLEAN DEFAULT false;
ALTER TABLE annotation_regions ADD COLUMN verdict_default BOOLEAN DEFAULT false;
