from ringkv.cli import main

raise SystemExit(main())
