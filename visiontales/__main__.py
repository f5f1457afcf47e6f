from visiontales.app.cli import main

raise SystemExit(main())
