"""Document extraction: the offline text-layer extractor and the e-invoice XML reader."""
