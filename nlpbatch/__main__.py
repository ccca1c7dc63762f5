from nlpbatch.cli import main

raise SystemExit(main())
