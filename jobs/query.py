"""Ray job entry point of ``weightzoo search`` (:mod:`pipeline.commands.query`):

    ray job submit --working-dir . -- python jobs/query.py --help
"""
from pipeline.commands.query import main

if __name__ == "__main__":
    main()
