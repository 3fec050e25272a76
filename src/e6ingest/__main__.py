from e6ingest.cli import main

raise SystemExit(main())
