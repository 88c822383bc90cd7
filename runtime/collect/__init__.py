"""``edgecls run --collect DIR``: keep the frames worth a person's look (unknown, empty or multi-label sets,
uncertain, low margin), each saved once with its record in an append-only manifest, bounded by rate caps, a disk
cap and near-duplicate suppression, without ever blocking the run loop. See docs/field-loop.md."""
