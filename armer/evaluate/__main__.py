from armer.evaluate.cli import main

main()
