"""The output folder a run writes in: one run at a time holds it (``lock``), and e6ingest
only ever removes what it can prove it wrote there (``folder``)."""
