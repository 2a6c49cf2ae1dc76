from cidsync.cli import main

main()
