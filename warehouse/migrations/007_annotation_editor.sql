-- Who last changed each annotation (Label Studio's `updated_by`, as 'ls:<user id>@<host>'), and
-- whether that is someone other than its author (`completed_by`). In Label Studio Community every
-- member may edit anyone's annotation, so such an edit is flagged at sync and curation leaves the
-- annotation out (reported in dataset_exclusions). Rows synced before this migration keep NULL /
-- false: their last editor was not recorded.
ALTER TABLE annotations ADD COLUMN updated_by TEXT;
ALTER TABLE annotations ADD COLUMN edited_by_other BOOLEAN DEFAULT false;
ALTER TABLE annotation_versions ADD COLUMN updated_by TEXT;
