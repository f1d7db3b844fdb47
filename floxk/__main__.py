from floxk.cli import main

main()
