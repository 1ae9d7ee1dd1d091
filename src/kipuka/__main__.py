from kipuka.cli.main import main

raise SystemExit(main())
