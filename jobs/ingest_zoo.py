"""Ray job entry point of ``weightzoo ingest`` (:mod:`pipeline.commands.ingest_zoo`):

    ray job submit --working-dir . -- python jobs/ingest_zoo.py --help
"""
from pipeline.commands.ingest_zoo import main

if __name__ == "__main__":
    main()
