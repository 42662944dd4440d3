from tradestream.cli import main

raise SystemExit(main())
