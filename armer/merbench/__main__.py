"""python -m armer.merbench {install,uninstall,status,check} PATH/TO/MERBench"""
import sys

from armer.merbench.installer import main

if __name__ == "__main__":
    sys.exit(main())
