"""GeoSeg's TorchServe handler and its pure helpers (decode, tile, stitch, encode)."""
