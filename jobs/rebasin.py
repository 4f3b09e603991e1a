"""Ray job entry point of ``weightzoo align`` (:mod:`pipeline.commands.rebasin`):

    ray job submit --working-dir . -- python jobs/rebasin.py --help
"""
from pipeline.commands.rebasin import main

if __name__ == "__main__":
    main()
