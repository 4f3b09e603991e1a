"""Ray job entry point of ``weightzoo lineage`` (:mod:`pipeline.commands.lineage`):

    ray job submit --working-dir . -- python jobs/lineage.py --help
"""
from pipeline.commands.lineage import main

if __name__ == "__main__":
    main()
