from armer.train.cli import main

main()
