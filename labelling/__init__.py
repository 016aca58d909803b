"""The labelling page: click points of classes on rasters, see a quick map, get suggestions."""
