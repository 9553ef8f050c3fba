from ringkv.operator.main import main

raise SystemExit(main())
