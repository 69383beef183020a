"""Planning a slide's work: the working grid (grid), the chunks (chunks), the tissue mask (tissue),
the work folder's manifest (manifest) and the job that ties them together (job)."""
