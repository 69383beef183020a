"""Reading slides: the Slide interface (base), its backends (openslide, tiff, array), opening a
file with the right one (factory), choosing and resampling a level to a resolution (resolution),
and writing Aperio-style pyramidal TIFFs that these readers open (pyramid_writer)."""
