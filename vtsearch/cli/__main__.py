from vtsearch.cli.main import main

main()
