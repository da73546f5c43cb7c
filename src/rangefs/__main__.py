from rangefs.cli import main

raise SystemExit(main())
