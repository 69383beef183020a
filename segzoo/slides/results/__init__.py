"""What a slide run produces: each chunk's nuclei (chunk_result), the slide's output files written
from them as one set (outputs), and the run's report (summary)."""
