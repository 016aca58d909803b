"""Whole-scene mapping (`geoseg predict`): rasters of any size read in windows, tiled like the
handler, written as a Cloud Optimized GeoTIFF with vectors and statistics."""
