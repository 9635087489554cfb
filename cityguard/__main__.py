from cityguard.cli import main

raise SystemExit(main())
